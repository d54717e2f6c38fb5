// Vireo: notice when the login expired while OHIF is open (every /dicomweb request then answers
// 401 and OHIF alone would show empty viewports). Inside Vireo's panel the parent page is told
// (it offers to log in again); in a tab of its own this page shows the notice itself.
(function () {
  var told = false;
  function loginUrl() {
    var where = window.top === window.self ? window.location : window.top.location;
    return "/login?next=" + encodeURIComponent(where.pathname + where.search);
  }
  function showNotice() {
    if (document.getElementById("vireo-session-expired")) return;
    var box = document.createElement("div");
    box.id = "vireo-session-expired";
    box.setAttribute("role", "alert");
    box.style.cssText = "position:fixed;inset:0;z-index:2147483647;display:flex;align-items:center;justify-content:center;" +
      "background:rgba(0,0,0,.72);font:15px/1.5 system-ui,sans-serif;color:#fff";
    var card = document.createElement("div");
    card.style.cssText = "background:#1f2937;padding:20px 26px;border-radius:8px;max-width:420px;text-align:center";
    card.innerHTML = "<p style='margin:0 0 12px'>Your Vireo login has expired, so the viewer cannot load images.</p>";
    var link = document.createElement("a");
    link.textContent = "Log in again";
    link.href = loginUrl();
    link.target = "_top";
    link.setAttribute("data-testid", "ohif-login-again");
    link.style.cssText = "display:inline-block;background:#2563eb;color:#fff;padding:6px 16px;border-radius:4px;text-decoration:none";
    card.appendChild(link);
    box.appendChild(card);
    (document.body || document.documentElement).appendChild(box);
  }
  function tellPanel() {
    // Same origin: the notice goes into Vireo's page, right above this iframe.
    var frame = window.frameElement;
    if (!frame || !frame.parentElement) return;
    var doc = frame.ownerDocument;
    if (doc.querySelector("[data-testid=ohif-session-expired]")) return;
    var bar = doc.createElement("div");
    bar.setAttribute("role", "alert");
    bar.setAttribute("data-testid", "ohif-session-expired");
    bar.style.cssText = "background:#fef3c7;color:#78350f;border:1px solid #f59e0b;border-radius:4px;padding:6px 10px;font-size:13px";
    bar.textContent = "Your login has expired, so the viewer cannot load images. ";
    var link = doc.createElement("a");
    link.textContent = "Log in again";
    link.href = loginUrl();
    link.style.cssText = "font-weight:600;text-decoration:underline;color:inherit";
    bar.appendChild(link);
    frame.parentElement.insertBefore(bar, frame);
  }
  function expired() {
    if (told) return;
    told = true;
    if (window.top !== window.self) {
      try { tellPanel(); } catch (e) { /* not inside Vireo's page */ }
      try { window.parent.postMessage({ type: "vireo-ohif-session-expired" }, window.location.origin); } catch (e) { /* parent gone */ }
    }
    showNotice();
  }
  window.vireoSessionExpired = expired;
  function watched(url) {
    try { return new URL(url, window.location.href).pathname.indexOf("/dicomweb") === 0; } catch (e) { return false; }
  }
  var open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url) {
    var result = open.apply(this, arguments);
    if (watched(url)) {
      // Marked, so Vireo answers an expired login with a plain 401 (app/ohif/challenge.py), not a browser password dialog.
      this.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      this.addEventListener("loadend", function () { if (this.status === 401) expired(); });
    }
    return result;
  };
  if (window.fetch) {
    var fetch0 = window.fetch;
    window.fetch = function (input, init) {
      var url = typeof input === "string" ? input : (input && input.url) || "";
      if (watched(url)) {
        init = Object.assign({}, init || {});
        var headers = new Headers(init.headers || (typeof input === "string" ? undefined : input.headers));
        headers.set("X-Requested-With", "XMLHttpRequest");
        init.headers = headers;
      }
      return fetch0.call(this, input, init).then(function (response) {
        if (response.status === 401 && watched(url)) expired();
        return response;
      });
    };
  }
})();
