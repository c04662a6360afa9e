// A small time-series line chart on a canvas: the last POINTS_MAX samples of a few
// series, a y axis from zero to the largest value shown, a legend with the newest values.

/** Samples kept per series: two minutes at one poll per second. */
const POINTS_MAX = 120;
const COLORS = ['#2563eb', '#c2410c', '#15803d', '#7c3aed'];

export class LineChart {
  /** @param {HTMLCanvasElement} canvas  @param {string[]} labels one per series */
  constructor(canvas, labels) {
    this.canvas = canvas;
    this.labels = labels;
    this.series = labels.map(() => []);
  }

  /** Adds one sample per series (null: no value this time) and redraws. */
  push(values) {
    values.forEach((v, i) => {
      const s = this.series[i];
      s.push(v);
      if (s.length > POINTS_MAX) s.shift();
    });
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const left = 44, top = 18, bottom = 16, right = 6;
    const plotW = width - left - right, plotH = height - top - bottom;
    const all = this.series.flat().filter((v) => v !== null && Number.isFinite(v));
    const highest = all.length ? Math.max(...all) : 0;
    const max = highest > 0 ? niceCeiling(highest) : 1;
    g.font = '11px system-ui, sans-serif';
    g.strokeStyle = '#dde1e6';
    g.fillStyle = '#66707c';
    g.lineWidth = 1;
    for (let i = 0; i <= 2; i++) {
      const y = top + plotH - (plotH * i) / 2;
      g.beginPath();
      g.moveTo(left, y);
      g.lineTo(left + plotW, y);
      g.stroke();
      g.fillText(formatValue((max * i) / 2), 2, y + 4);
    }
    const step = plotW / (POINTS_MAX - 1);
    this.series.forEach((s, i) => {
      g.strokeStyle = COLORS[i % COLORS.length];
      g.lineWidth = 1.6;
      g.beginPath();
      let drawing = false;
      const offset = POINTS_MAX - s.length;
      s.forEach((v, j) => {
        if (v === null || !Number.isFinite(v)) { drawing = false; return; }
        const x = left + (offset + j) * step;
        const y = top + plotH - (plotH * v) / max;
        if (drawing) g.lineTo(x, y); else g.moveTo(x, y);
        drawing = true;
      });
      g.stroke();
    });
    let x = left;
    this.labels.forEach((label, i) => {
      const s = this.series[i];
      const last = s.length ? s[s.length - 1] : null;
      const text = `${label} ${last === null ? '–' : formatValue(last)}`;
      g.fillStyle = COLORS[i % COLORS.length];
      g.fillRect(x, 5, 8, 8);
      g.fillStyle = '#1d232b';
      g.fillText(text, x + 11, 13);
      x += g.measureText(text).width + 24;
    });
  }
}

/** The smallest 1, 2 or 5 times a power of ten at or above v. */
function niceCeiling(v) {
  const power = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * power >= v) return m * power;
  return 10 * power;
}

export function formatValue(v) {
  if (v === null || !Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (a >= 100 || Number.isInteger(v)) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  return v.toFixed(2);
}
