// The drag handle between the gallery and the detail panel. While dragging it sets the panel's
// (its next sibling's) width itself, so the drag follows the pointer without a server round trip;
// on release it reports the width once, and the server remembers it for the user.
// Keyboard: with the handle focused, ← widens and → narrows the panel.
export default {
  template: `<div class="vireo-split-handle" role="separator" aria-orientation="vertical" tabindex="0"
    aria-label="Resize the detail panel" title="Drag to resize the panel"
    data-testid="panel-handle" @pointerdown.prevent="down" @keydown="key"><span class="vireo-split-grip"></span></div>`,
  props: { min: Number, galleryMin: Number },
  methods: {
    panel() {
      return this.$el.nextElementSibling;
    },
    clamp(width) {
      const row = this.$el.parentElement.clientWidth;
      const most = Math.max(this.min, row - this.galleryMin);
      return Math.round(Math.max(this.min, Math.min(width, most)));
    },
    report() {
      this.$emit("resize", { width: Math.round(this.panel().getBoundingClientRect().width) });
    },
    down(event) {
      const panel = this.panel();
      const startX = event.clientX;
      const start = panel.getBoundingClientRect().width;
      this.$el.setPointerCapture(event.pointerId);
      this.$el.classList.add("vireo-dragging");
      const move = (e) => {
        panel.style.width = this.clamp(start + (startX - e.clientX)) + "px";
      };
      const up = () => {
        this.$el.removeEventListener("pointermove", move);
        this.$el.removeEventListener("pointerup", up);
        this.$el.removeEventListener("pointercancel", up);
        this.$el.classList.remove("vireo-dragging");
        this.report();
      };
      this.$el.addEventListener("pointermove", move);
      this.$el.addEventListener("pointerup", up);
      this.$el.addEventListener("pointercancel", up);
    },
    key(event) {
      const step = { ArrowLeft: 40, ArrowRight: -40 }[event.key];
      if (step === undefined) return;
      event.preventDefault();
      event.stopPropagation();
      const panel = this.panel();
      panel.style.width = this.clamp(panel.getBoundingClientRect().width + step) + "px";
      this.report();
    },
  },
};
