"""CSS that every page needs from a component, added to NiceGUI's shared head once per process.

`ui.add_css(css, shared=True)` appends to a process-wide string each time it is called; a
component calling it on every construction (a page load) grew that string, and with it every
page's HTML and the server's memory, by a copy per page load (the leak the 1,000-load
benchmark of bench/ui.py found).
"""

from __future__ import annotations

from nicegui import Client, ui


def add_shared_css(name: str, css: str) -> None:
    """Add `css` to every page unless it is there already; `name` marks it (a CSS comment) so that it is found again."""
    marker = f"/* vireo-css:{name} */"
    if marker in Client.shared_head_html:
        return
    ui.add_css(f"{marker}\n{css}", shared=True)
