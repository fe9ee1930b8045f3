import type { LatencySummary } from './lib.js';

export interface ChartPanel {
  title: string;
  series: Array<{ name: string; latency: LatencySummary }>;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * Latency CDFs, one panel per scenario: x = latency in ms on a log scale, y = percentile.
 * Hand-written SVG so the bench needs no charting dependency.
 */
export function latencySvg(panels: ChartPanel[], subtitle: string): string {
  const W = 900;
  const PH = 300;
  const M = { l: 60, r: 330, t: 40, b: 40 };
  const H = panels.length * (PH + M.t + M.b) + 30;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="18" font-size="13" font-weight="bold">unread-sync bench: latency CDFs</text>`,
    `<text x="10" y="32" fill="#555">${esc(subtitle)}</text>`,
  ];
  panels.forEach((panel, pi) => {
    const y0 = 30 + pi * (PH + M.t + M.b) + M.t;
    const pw = W - M.l - M.r;
    const all = panel.series.flatMap((s) => s.latency.cdf.map(([, v]) => v)).filter((v) => v > 0);
    const lo = 10 ** Math.floor(Math.log10(Math.max(1e-3, Math.min(...all, 1))));
    const hi = 10 ** Math.ceil(Math.log10(Math.max(...all, 1)));
    const x = (ms: number) => M.l + ((Math.log10(Math.max(ms, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * pw;
    const y = (p: number) => y0 + PH - (p / 100) * PH;
    out.push(`<text x="${M.l}" y="${y0 - 8}" font-size="12" font-weight="bold">${esc(panel.title)}</text>`);
    out.push(`<rect x="${M.l}" y="${y0}" width="${pw}" height="${PH}" fill="none" stroke="#999"/>`);
    for (let d = lo; d <= hi * 1.0001; d *= 10) {
      out.push(`<line x1="${x(d)}" y1="${y0}" x2="${x(d)}" y2="${y0 + PH}" stroke="#eee"/>`);
      out.push(`<text x="${x(d)}" y="${y0 + PH + 14}" text-anchor="middle">${d >= 1 ? d : d.toPrecision(1)} ms</text>`);
    }
    for (const p of [0, 25, 50, 75, 95, 99, 100]) {
      out.push(`<line x1="${M.l}" y1="${y(p)}" x2="${M.l + pw}" y2="${y(p)}" stroke="#eee"/>`);
      out.push(`<text x="${M.l - 6}" y="${y(p) + 4}" text-anchor="end">p${p}</text>`);
    }
    panel.series.forEach((s, si) => {
      const color = COLORS[si % COLORS.length] as string;
      const pts = s.latency.cdf.map(([p, v]) => `${x(v).toFixed(1)},${y(p).toFixed(1)}`).join(' ');
      if (pts) out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts}"/>`);
      const ly = y0 + 12 + si * 16;
      out.push(`<line x1="${M.l + pw + 10}" y1="${ly - 4}" x2="${M.l + pw + 28}" y2="${ly - 4}" stroke="${color}" stroke-width="3"/>`);
      const label = `${s.name} (p50 ${s.latency.p50.toFixed(2)}, p99 ${s.latency.p99.toFixed(2)})`;
      out.push(`<text x="${M.l + pw + 32}" y="${ly}">${esc(label)}</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n');
}
