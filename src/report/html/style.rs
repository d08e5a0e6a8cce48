//! The report's inline stylesheet (the page fetches nothing).

pub(super) const STYLE: &str = r#"
:root{--ink:#1f2933;--muted:#616e7c;--line:#cbd2d9;--bg:#ffffff;--panel:#f5f7fa;
--enrolled:#9aa5b1;--excluded:#d9dee4;--eligible:#7b8794;--dosed:#2f80ed;--downloading:#f2a516;
--downloaded:#8e5cf5;--installing:#e8590c;--error:#d64545;--detached:#3e4c59;--updated:#1f9d55;
--wrong:#ab091e;--ended:#e4e7eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 "Liberation Sans","Helvetica Neue",Arial,sans-serif}
main{max-width:1360px;margin:0 auto;padding:20px 28px 40px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:32px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:0}
code,.mono{font-family:"DejaVu Sans Mono","Liberation Mono",Menlo,monospace;font-size:12px}
a{color:#1d5fbf}
.sub{color:var(--muted);margin:0 0 12px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600}
tbody tr:nth-child(even) td{background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.meta th{width:190px}
table.meta td{word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:22px}
.card span{color:var(--muted);font-size:12px}
.card.alarm{background:#fff0f0;border-color:#e8a0a0}.card.alarm b{color:#8a1c1c}
.sim{background:#e8f1fd;border:1px solid #8fb3e8;border-radius:6px;padding:6px 10px}
.muted{color:var(--muted);font-size:12px}
.nowrap{white-space:nowrap}
table.per-device{width:100%}
table.per-device .mono{word-break:break-all;font-size:11px}
table.per-device td:nth-child(2){min-width:230px}
table.per-device td:nth-child(4){max-width:230px}
a.anomaly{color:#8a1c1c;font-size:12px}
details.lanes-excluded{margin:0 0 12px}
details.lanes-excluded summary{cursor:pointer;color:var(--muted)}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;white-space:nowrap}
.o-good{background:#d3f2e0;color:#0e5a2f}.o-bad{background:#fbd9d9;color:#8a1c1c}
.o-warn{background:#fff0c2;color:#7a5200}.o-neutral{background:#e3e8ff;color:#2a3a8c}
.o-none{background:#e4e7eb;color:#3e4c59}.arm{background:#e0ecfb;color:#1d4f91}
.warn{background:#fff6db;border:1px solid #f0c36d;border-radius:6px;padding:6px 10px}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:12px;color:var(--muted);margin:6px 0 12px}
.legend i{display:inline-block;width:22px;height:11px;border-radius:2px;vertical-align:-1px;margin-right:5px;border:1px solid rgba(0,0,0,.15)}
.lane{border:1px solid var(--line);border-radius:6px;padding:8px 12px 6px;margin:0 0 12px;break-inside:avoid;page-break-inside:avoid}
.lane header{display:flex;flex-wrap:wrap;gap:4px 12px;align-items:baseline}
.lane header .facts{color:var(--muted);font-size:12px}
.lane svg{display:block;width:100%;height:auto;margin-top:4px}
.lane ol,.lane ul{margin:2px 0 4px;padding-left:22px;font-size:12px}
svg text{font-family:"Liberation Sans",Arial,sans-serif}
.consort{display:block;width:100%;max-width:1100px;height:auto;margin:8px 0}
.consort rect{fill:#fff;stroke:#52606d;stroke-width:1.2}
.consort rect.side{fill:var(--panel)}
.consort rect.arm{fill:#eef4fd}
.consort text{font-size:13px;fill:var(--ink)}
.consort text.t{font-weight:700}
.consort text.d{font-size:12px;fill:var(--muted)}
.consort line,.consort path{stroke:#52606d;stroke-width:1.4;fill:none}
.s-enrolled{fill:var(--enrolled);background:var(--enrolled)}
.s-excluded{fill:var(--excluded);background:var(--excluded)}
.s-eligible{fill:var(--eligible);background:var(--eligible)}
.s-dosed{fill:var(--dosed);background:var(--dosed)}
.s-downloading{fill:var(--downloading);background:var(--downloading)}
.s-downloaded{fill:var(--downloaded);background:var(--downloaded)}
.s-installing{fill:var(--installing);background:var(--installing)}
.s-error{fill:var(--error);background:var(--error)}
.s-detached{background:repeating-linear-gradient(45deg,var(--detached) 0 3px,#fff 3px 6px)}
.s-updated{fill:var(--updated);background:var(--updated)}
.s-wrong{fill:var(--wrong);background:var(--wrong)}
.a-ack{fill:var(--updated)}.a-err{fill:var(--error)}.a-notnow{fill:#9aa5b1}.a-other{fill:#f2a516}
.lane .grid{stroke:#e4e7eb;stroke-width:1}
.lane .zero{stroke:#2f80ed;stroke-width:1.5;stroke-dasharray:4 3}
.lane .rowlabel{font-size:11px;fill:var(--muted)}
.lane .tick{font-size:10.5px;fill:var(--muted)}
.lane .dose{fill:#2f80ed;stroke:#102a43;stroke-width:1}
.lane .dosefail{fill:#fff;stroke:var(--error);stroke-width:2}
.lane .cmd{stroke:#7b8794;stroke-width:1}
.lane .obs-operator{fill:#e8590c;stroke:#7a2e0e;stroke-width:.8}
.lane .obs-harness{fill:#9aa5b1;stroke:#52606d;stroke-width:.8}
.lane .dlabel{font-size:10.5px;fill:#102a43}
footer{margin-top:30px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:8px}
@media print{
 @page{size:A4 landscape;margin:10mm}
 body{font-size:11px;-webkit-print-color-adjust:exact;print-color-adjust:exact}
 main{max-width:none;padding:0}
 h2{break-after:avoid;page-break-after:avoid}
 section.flow,table{break-inside:avoid;page-break-inside:avoid}
 a{color:inherit;text-decoration:none}
}
"#;
