// The series gallery: cards (flat or patient → study → series), multiselect and infinite scroll.
// Everything shown comes from DICOM metadata, which is untrusted: it is only ever bound as text
// ({{ }}) or as attribute values, never as HTML.
const CARD_MIN_WIDTH = 190;  // px: narrower, a card's text and tag chips stop being readable
const GRID_GAP = 10;  // px between cards
// One card, used by both views. Keys go to the card itself: a text field never sees them here.
const CARD = `
  <div v-bind="cardAttrs(item)" @click="onClick($event, item)" @dblclick="open(item)" @keydown="onKey($event, item)" @focus="focusUid = item.uid">
    <div class="vireo-thumb-box">
      <img :src="item.thumb" class="vireo-thumb" draggable="false" :alt="item.modality"/>
      <span class="vireo-modality">{{ item.modality }}</span>
      <span v-if="!item.complete" class="vireo-incomplete" title="instances are missing">incomplete</span>
      <button type="button" tabindex="-1" class="vireo-eye" title="details" aria-label="Open the details of this series" data-testid="open-detail" @click.stop="open(item)"><span class="material-icons">visibility</span></button>
      <a v-if="item.ohif" :href="item.ohif" target="_blank" rel="noopener" tabindex="-1" class="vireo-eye" style="top: 36px; display: flex; align-items: center; justify-content: center; color: inherit; text-decoration: none"
         title="Open in OHIF (new tab)" aria-label="Open this series in OHIF Viewer in a new tab" data-testid="open-ohif-card" @click.stop @dblclick.stop><span class="material-icons">open_in_new</span></a>
    </div>
    <div v-if="cardText" class="vireo-card-text">
      <div v-for="f in cardFields" :key="f.field" class="vireo-field" :class="{truncate: f.truncate}" :title="f.label + ': ' + (item.fields[f.field] || '')">{{ item.fields[f.field] || '—' }}</div>
    </div>
    <div class="vireo-tags">
      <span v-for="t in item.tags" :key="t" class="vireo-tag" data-testid="card-tag" :data-tag="t" :style="tagStyle(t)" :title="t">
        <span class="vireo-tag-name">{{ t }}</span><button type="button" tabindex="-1" class="vireo-tag-x" data-testid="card-tag-remove"
          :aria-label="'Remove the tag ' + t + ' from this series'" title="remove this tag from this series"
          @click.stop="untag(item, t)" @dblclick.stop><span aria-hidden="true">×</span></button>
      </span>
    </div>
  </div>`;

// Same hash as components/tag_colours.py (FNV-1a over UTF-16 code units): same tag, same colour.
function paletteIndex(tag, size) {
  let h = 0x811c9dc5;
  for (let i = 0; i < tag.length; i++) {
    h ^= tag.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % size;
}

export default {
  template: `
  <div class="vireo-gallery" :class="{'tag-mode': tagMode}" role="listbox" aria-multiselectable="true" aria-label="Series: arrow keys move, Space selects, Enter opens the details">
    <template v-if="structured">
      <div v-for="patient in groups" :key="patient.key" class="vireo-patient q-mb-md" data-testid="patient-card">
        <div class="vireo-group-head">
          <span class="material-icons vireo-group-icon">person</span>
          <span v-for="f in patient.fields" :key="f.field" class="vireo-group-field"><span class="vireo-field-name">{{ f.label }}</span> {{ f.value }}</span>
          <span class="vireo-group-count">{{ patient.count }} series</span>
        </div>
        <div v-for="study in patient.studies" :key="study.key" class="vireo-study" data-testid="study-card">
          <div class="vireo-group-head vireo-study-head">
            <span class="material-icons vireo-group-icon">folder</span>
            <span v-for="f in study.fields" :key="f.field" class="vireo-group-field"><span class="vireo-field-name">{{ f.label }}</span> {{ f.value }}</span>
            <a v-if="study.ohif" :href="study.ohif" target="_blank" rel="noopener" style="margin-left: auto; font-size: 12px" title="Open this study in OHIF Viewer (new tab)" data-testid="open-ohif-study">Open in OHIF</a>
          </div>
          <div class="vireo-grid" :style="gridStyle">
            <template v-for="item in study.items" :key="item.uid">${CARD}</template>
          </div>
        </div>
      </div>
    </template>
    <div v-else class="vireo-grid" :style="gridStyle">
      <template v-for="item in items" :key="item.uid">${CARD}</template>
    </div>
    <div ref="sentinel" class="vireo-sentinel">
      <span v-if="items.length < total">loading more…</span>
      <span v-else-if="total === 0">No series match.</span>
    </div>
  </div>`,
  props: {
    cardFields: Array,
    patientFields: Array,
    studyFields: Array,
    structured: Boolean,
    columns: Number,
    cardText: Boolean,
    tagMode: Boolean,
    activeTags: Array,
    initialItems: Array,
    initialTotal: Number,
    tagPalette: Array,
  },
  data() {
    // The first page comes with the page itself: cards and thumbnails need no round trip.
    return { items: this.initialItems || [], total: this.initialTotal || 0, selected: {}, anchor: null, allMatching: false, loading: false, focusUid: null };
  },
  computed: {
    gridStyle() {
      // A fixed "items per row" is a most, not a must: each column is at least 1/n of the row, so no more than n fit,
      // and never narrower than a readable card, so beside an open panel (or on a small screen) columns drop instead.
      const n = this.columns;
      const cols = n > 0 ? `repeat(auto-fill, minmax(max(${CARD_MIN_WIDTH}px, calc((100% - ${(n - 1) * GRID_GAP}px) / ${n} - 0.5px)), 1fr))`
        : `repeat(auto-fill, minmax(${CARD_MIN_WIDTH}px, 1fr))`;
      return { display: "grid", gridTemplateColumns: cols, gap: `${GRID_GAP}px` };
    },
    groups() {
      // A header shows every value its series have (modalities "MR, SEG"), in the order they come.
      const collect = (target, fields) => {
        fields.forEach((f, i) => {
          if (!target[i]) target[i] = { field: f.field, label: f.label, values: [] };
          if (f.value && !target[i].values.includes(f.value)) target[i].values.push(f.value);
        });
      };
      const shown = (fields) => fields.map((f) => ({ field: f.field, label: f.label, value: f.values.join(", ") }));
      const patients = new Map();
      for (const item of this.items) {
        let patient = patients.get(item.patient.key);
        if (!patient) {
          patient = { key: item.patient.key, fields: [], studies: new Map(), count: 0 };
          patients.set(item.patient.key, patient);
        }
        collect(patient.fields, item.patient.fields);
        let study = patient.studies.get(item.study.key);
        if (!study) {
          study = { key: item.study.key, fields: [], items: [], ohif: item.study.ohif || null };
          patient.studies.set(item.study.key, study);
        }
        collect(study.fields, item.study.fields);
        study.items.push(item);
        patient.count += 1;
      }
      return Array.from(patients.values()).map((p) => ({
        ...p,
        fields: shown(p.fields),
        studies: Array.from(p.studies.values()).map((st) => ({ ...st, fields: shown(st.fields) })),
      }));
    },
    ordered() {
      if (!this.structured) return this.items;
      return this.groups.flatMap((p) => p.studies.flatMap((s) => s.items));
    },
  },
  methods: {
    cardAttrs(item) {
      const selected = this.allMatching || !!this.selected[item.uid];
      // One card is in the tab order (the focused one, else the first): Tab enters the grid, arrows move in it.
      const focusable = this.focusUid === null ? item === this.ordered[0] : this.focusUid === item.uid;
      const described = this.cardFields.map((f) => item.fields[f.field]).filter((v) => v).join(", ");
      return {
        class: ["vireo-card", selected ? "selected" : ""], "data-uid": item.uid, "data-testid": "series-card",
        "data-selected": selected ? "true" : "false", role: "option", "aria-selected": selected ? "true" : "false",
        tabindex: focusable ? 0 : -1, "aria-label": `${item.modality} series${described ? ": " + described : ""}`,
      };
    },
    tagStyle(tag) {
      const palette = this.tagPalette || [];
      if (!palette.length) return {};
      const [background, color] = palette[paletteIndex(tag, palette.length)];
      return { background, color };
    },
    untag(item, tag) {
      // Off the card at once; the server's answer (or a failure) patches the card with the truth.
      item.tags = (item.tags || []).filter((t) => t !== tag);
      this.$emit("untag", { uid: item.uid, tag });
    },
    onKey(event, item) {
      if (event.target !== event.currentTarget || event.altKey || event.ctrlKey || event.metaKey) return;  // keys on the card's buttons stay theirs
      if (event.key === " " || event.key === "Spacebar") {
        event.preventDefault();
        this.toggleSelected(item);
      } else if (event.key === "Enter") {
        event.preventDefault();
        this.open(item);
      } else if (["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End"].includes(event.key)) {
        event.preventDefault();
        this.move(event.currentTarget, event.key);
      }
    },
    move(from, key) {
      // By the layout on screen, so it works for any column count and in the patient/study view alike.
      const cards = Array.from(this.$el.querySelectorAll("[data-testid=series-card]"));
      const index = cards.indexOf(from);
      let target = null;
      if (key === "ArrowLeft") target = cards[index - 1];
      else if (key === "ArrowRight") target = cards[index + 1];
      else if (key === "Home") target = cards[0];
      else if (key === "End") target = cards[cards.length - 1];
      else {
        const here = from.getBoundingClientRect();
        const centre = here.left + here.width / 2;
        const down = key === "ArrowDown";
        const row = cards
          .map((c) => ({ c, r: c.getBoundingClientRect() }))
          .filter(({ r }) => (down ? r.top >= here.bottom - 1 : r.bottom <= here.top + 1));
        if (row.length) {
          const nearestTop = down ? Math.min(...row.map(({ r }) => r.top)) : Math.max(...row.map(({ r }) => r.top));
          const inRow = row.filter(({ r }) => Math.abs(r.top - nearestTop) < 2);
          inRow.sort((a, b) => Math.abs(a.r.left + a.r.width / 2 - centre) - Math.abs(b.r.left + b.r.width / 2 - centre));
          target = inRow[0].c;
        }
      }
      if (!target) return;
      this.focusUid = target.dataset.uid;
      target.focus();
      target.scrollIntoView({ block: "nearest" });
    },
    toggleSelected(item) {
      // Space: as a Ctrl-click, the focused card joins or leaves the selection.
      if (this.allMatching) {
        this.allMatching = false;
        this.selected = {};
      }
      const next = { ...this.selected };
      if (next[item.uid]) delete next[item.uid];
      else next[item.uid] = true;
      this.selected = next;
      this.anchor = this.ordered.findIndex((i) => i.uid === item.uid);
      this.emitSelection();
    },
    reset(items, total) {
      clearTimeout(this.retry);
      this.items = items;
      this.total = total;
      this.selected = {};
      this.anchor = null;
      this.focusUid = null;
      this.allMatching = false;
      this.loading = false;
      this.$nextTick(() => this.check());
    },
    append(items, total) {
      clearTimeout(this.retry);
      const known = new Set(this.items.map((i) => i.uid));
      this.items = this.items.concat(items.filter((i) => !known.has(i.uid)));
      this.total = total;
      this.loading = false;
      this.$nextTick(() => this.check());
    },
    patch(uid, changes) {
      const item = this.items.find((i) => i.uid === uid);
      if (item) Object.assign(item, changes);
    },
    selectAll() {
      this.allMatching = true;
      this.selected = {};
      this.emitSelection();
    },
    clearSelection() {
      this.allMatching = false;
      this.selected = {};
      this.anchor = null;
      this.emitSelection();
    },
    emitSelection() {
      this.$emit("selection", { all: this.allMatching, uids: Object.keys(this.selected) });
    },
    open(item) {
      this.$emit("open", { uid: item.uid });
    },
    onClick(event, item) {
      this.focusUid = item.uid;
      const ordered = this.ordered;
      const index = ordered.findIndex((i) => i.uid === item.uid);
      const additive = event.ctrlKey || event.metaKey;
      if (this.tagMode && !additive && !event.shiftKey) {
        // Shown at once (each active tag flips, as the server does it); the server's answer is the final word.
        const tags = new Set(item.tags || []);
        for (const t of this.activeTags || []) tags.has(t) ? tags.delete(t) : tags.add(t);
        item.tags = Array.from(tags).sort();
        this.$emit("tag", { uid: item.uid });
        return;
      }
      if (this.allMatching) {
        this.allMatching = false;
        this.selected = {};
      }
      if (event.shiftKey && this.anchor !== null) {
        const from = Math.min(this.anchor, index), to = Math.max(this.anchor, index);
        const next = additive ? { ...this.selected } : {};
        for (let i = from; i <= to; i++) next[ordered[i].uid] = true;
        this.selected = next;
      } else if (additive) {
        const next = { ...this.selected };
        if (next[item.uid]) delete next[item.uid];
        else next[item.uid] = true;
        this.selected = next;
        this.anchor = index;
      } else {
        const only = Object.keys(this.selected).length === 1 && this.selected[item.uid];
        this.selected = only ? {} : { [item.uid]: true };
        this.anchor = index;
      }
      this.emitSelection();
    },
    check() {
      // Ask for the next page while the end of the list is (nearly) in view.
      if (this.loading || this.items.length >= this.total || !this.$refs.sentinel) return;
      const rect = this.$refs.sentinel.getBoundingClientRect();
      if (rect.top < window.innerHeight + 800) {
        this.loading = true;
        this.$emit("more", { loaded: this.items.length });
        // An event sent before the websocket is up is lost: ask again unless the page arrived.
        clearTimeout(this.retry);
        this.retry = setTimeout(() => { this.loading = false; this.check(); }, 3000);
      }
    },
  },
  mounted() {
    // Tell the server once the first cards are painted, so it draws the side panels after them.
    this.$nextTick(() => {
      const images = Array.from(this.$el.querySelectorAll("img")).slice(0, 50);
      Promise.all(images.map((i) => (i.complete ? Promise.resolve() : new Promise((r) => { i.onload = r; i.onerror = r; }))))
        .then(() => this.$emit("painted", {}));
    });
    this.onScroll = () => this.check();
    window.addEventListener("scroll", this.onScroll, { passive: true });
    window.addEventListener("resize", this.onScroll, { passive: true });
    this.observer = new IntersectionObserver(() => this.check(), { rootMargin: "800px" });
    this.observer.observe(this.$refs.sentinel);
  },
  unmounted() {
    window.removeEventListener("scroll", this.onScroll);
    window.removeEventListener("resize", this.onScroll);
    if (this.observer) this.observer.disconnect();
  },
};
