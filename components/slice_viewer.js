// A slice viewer over Vireo's slice endpoints: wheel / slider / arrow keys for slices, drag for
// window and level, presets, zoom and pan, and SEG overlays with a toggle per segment.
// Slices are PNGs rendered by the server; the neighbours are fetched ahead, so scrolling shows the
// next slice at once.
export default {
  template: `
  <div class="vireo-viewer" tabindex="0" @keydown="onKey" ref="root" data-testid="viewer">
    <div v-if="!plan || !plan.slices" class="q-pa-md">No image to show.</div>
    <template v-else>
      <div class="vireo-viewport" ref="viewport" @wheel.prevent="onWheel" @mousedown.prevent="onDown" @contextmenu.prevent>
        <div class="vireo-stack" :style="stackStyle">
          <img :src="sliceSrc" class="vireo-slice" draggable="false" data-testid="viewer-image" :data-index="index" @load="onLoaded"/>
          <template v-for="layer in plan.overlays" :key="layer.series_uid">
            <img v-if="visibleOf(layer).length" :src="overlaySrc(layer)" class="vireo-overlay" draggable="false" data-testid="viewer-overlay" :data-index="index"/>
          </template>
        </div>
        <div class="vireo-hud" data-testid="viewer-status">{{ index + 1 }} / {{ plan.slices }}<span v-if="window"> · W {{ Math.round(window.width) }} L {{ Math.round(window.center) }}</span> · {{ Math.round(zoom * 100) }}%</div>
      </div>
      <input type="range" min="0" :max="plan.slices - 1" :value="index" @input="go(Number($event.target.value))" class="vireo-slider" data-testid="viewer-slider"/>
      <div class="vireo-controls">
        <button v-for="(w, name) in plan.presets" :key="name" class="vireo-btn" @click="setWindow(w)" :data-testid="'preset-' + name">{{ name }}</button>
        <button class="vireo-btn" @click="zoomBy(1.25)" title="zoom in"><span class="material-icons" style="font-size:14px">zoom_in</span></button>
        <button class="vireo-btn" @click="zoomBy(0.8)" title="zoom out"><span class="material-icons" style="font-size:14px">zoom_out</span></button>
        <button class="vireo-btn" @click="resetView" title="fit">fit</button>
      </div>
      <div v-for="layer in plan.overlays" :key="layer.series_uid" class="vireo-segments">
        <label v-for="s in layer.segments" :key="s.number" class="vireo-segment">
          <input type="checkbox" :checked="isVisible(layer, s.number)" @change="toggle(layer, s.number)" :data-testid="'segment-' + s.number"/>
          <span class="vireo-swatch" :style="{background: s.colour}"></span>{{ s.label }}
        </label>
      </div>
      <div class="vireo-hint">wheel, slider or ↑↓ ←→: slices · drag: window/level · right-drag: pan · ctrl+wheel: zoom</div>
    </template>
  </div>`,
  props: { plan: Object },
  data() {
    return { index: 0, window: null, zoom: 1, panX: 0, panY: 0, hidden: {}, shownSrc: "" };
  },
  computed: {
    base() {
      return `/api/series/${encodeURIComponent(this.plan.image_series_uid)}`;
    },
    sliceSrc() {
      return this.srcFor(this.index);
    },
    stackStyle() {
      return { transform: `translate(${this.panX}px, ${this.panY}px) scale(${this.zoom})` };
    },
  },
  watch: {
    plan: { handler() { this.start(); }, immediate: true },
  },
  methods: {
    start() {
      if (!this.plan) return;
      this.index = this.plan.start || 0;
      this.window = this.plan.window ? { ...this.plan.window } : null;
      this.hidden = {};
      this.resetView();
      this.prefetch();
    },
    srcFor(index) {
      const w = this.window ? `?center=${this.window.center.toFixed(1)}&width=${Math.max(1, this.window.width).toFixed(1)}` : "";
      return `${this.base}/slices/${index}${w}`;
    },
    visibleOf(layer) {
      return layer.segments.filter((s) => !this.hidden[layer.series_uid + ":" + s.number]).map((s) => s.number);
    },
    isVisible(layer, number) {
      return !this.hidden[layer.series_uid + ":" + number];
    },
    toggle(layer, number) {
      const key = layer.series_uid + ":" + number;
      this.hidden = { ...this.hidden, [key]: !this.hidden[key] };
    },
    overlaySrc(layer) {
      return `${this.base}/overlay/${encodeURIComponent(layer.series_uid)}/${this.index}?segments=${this.visibleOf(layer).join(",")}`;
    },
    go(index) {
      if (!this.plan) return;
      this.index = Math.max(0, Math.min(this.plan.slices - 1, index));
      this.$emit("slice", { index: this.index });
      this.prefetch();
    },
    prefetch() {
      for (const d of [1, -1, 2, -2]) {
        const i = this.index + d;
        if (i >= 0 && i < this.plan.slices) new Image().src = this.srcFor(i);
      }
    },
    onLoaded() {
      this.$emit("loaded", { index: this.index });
    },
    onWheel(event) {
      if (event.ctrlKey) this.zoomBy(event.deltaY < 0 ? 1.1 : 0.9);
      else this.go(this.index + (event.deltaY > 0 ? 1 : -1));
    },
    onKey(event) {
      const step = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 }[event.key];
      if (step !== undefined) {
        event.preventDefault();
        event.stopPropagation();
        this.go(this.index + step);
      }
    },
    setWindow(w) {
      this.window = { center: w.center, width: w.width };
      this.prefetch();
    },
    zoomBy(factor) {
      this.zoom = Math.max(0.2, Math.min(20, this.zoom * factor));
    },
    resetView() {
      this.zoom = 1;
      this.panX = 0;
      this.panY = 0;
    },
    onDown(event) {
      this.$refs.root.focus();
      const startX = event.clientX, startY = event.clientY;
      const pan = event.button === 2 || event.shiftKey;
      const from = { panX: this.panX, panY: this.panY, window: this.window ? { ...this.window } : null };
      const move = (e) => {
        const dx = e.clientX - startX, dy = e.clientY - startY;
        if (pan) {
          this.panX = from.panX + dx;
          this.panY = from.panY + dy;
        } else if (from.window) {
          const scale = Math.max(from.window.width, 10) / 200;
          this.window = { width: Math.max(1, from.window.width + dx * scale), center: from.window.center - dy * scale };
        }
      };
      const up = () => {
        window.removeEventListener("mousemove", move);
        window.removeEventListener("mouseup", up);
        if (!pan) this.prefetch();
      };
      window.addEventListener("mousemove", move);
      window.addEventListener("mouseup", up);
    },
  },
};
