//! The web view's HTML: the board of `trial::live_view` as a table, and the page around it
//! (inline CSS and script, no fetch outside this server: the page works with no network).
//!
//! The page shows the board as rendered when it was served, then follows the journal: the
//! script listens to `/events` from the byte offset the board was rendered at (so no event falls
//! between the two), lists each event as it comes, fetches `/board` again and, at most every few
//! seconds, reloads the swimlanes (`/report`, the run's report.html rendered from the journal so
//! far by `report::html`).

use crate::report::html::esc;
use crate::trial::live_view::{Board, COLUMNS, phase_word};
use std::fmt::Write;

/// The board as HTML: the header line and one table row per device. `seq` is the last journal
/// event it includes (`data-seq`, for the page's script and for tests).
pub fn board_html(b: &Board, seq: u64) -> String {
    let h = &b.header;
    let mut s = String::new();
    let _ = write!(
        s,
        "<div id=\"board\" data-seq=\"{seq}\" data-state=\"{}\">\n<p class=\"head\"><b>{}</b> \
         <span class=\"state\">{}</span>",
        esc(&h.state),
        esc(&h.trial_id),
        esc(&h.state)
    );
    if let Some(t) = &h.time_scale {
        let _ = write!(s, " <span class=\"scale\">{}</span>", esc(t));
    }
    let _ = write!(
        s,
        " · <span class=\"tplus\">{}</span> · follow-up <span class=\"left\">{}</span></p>\n\
         <p class=\"counts\">",
        esc(&h.t_plus),
        esc(&h.follow_up_left)
    );
    if h.counts.is_empty() {
        s.push_str("no devices yet");
    }
    for (i, (p, n)) in h.counts.iter().enumerate() {
        let _ = write!(
            s,
            "{}<span class=\"ph {}\">{n} {}</span>",
            if i > 0 { " · " } else { "" },
            css_class(phase_word(*p)),
            esc(phase_word(*p))
        );
    }
    s.push_str("</p>\n<table id=\"devices\">\n<thead><tr>");
    for c in COLUMNS {
        let _ = write!(s, "<th>{}</th>", esc(c));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for r in &b.rows {
        let _ = write!(
            s,
            "<tr data-udid=\"{}\" class=\"ph {}\" title=\"{}\">",
            esc(&r.udid),
            css_class(phase_word(r.phase)),
            esc(&r.udid)
        );
        for c in &r.cells {
            let _ = write!(s, "<td>{}</td>", esc(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n</table>\n</div>\n");
    s
}

fn css_class(phase: &str) -> String {
    phase.replace(' ', "-")
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}\
table{border-collapse:collapse}th,td{padding:2px 10px;text-align:left;white-space:nowrap}\
th{border-bottom:1px solid #888}tr:nth-child(even){background:#f4f4f4}\
.head{font-size:16px}.state{font-weight:bold}.scale{color:#a60}\
tr.excluded{color:#999}tr.dose-failed,tr.dose-uncertain,tr.dose-withheld{color:#b00}\
tr.following-up td:nth-child(5){color:#06c}tr.ended td:nth-child(5){color:#080}\
#conn{float:right;color:#888}#conn.down{color:#b00}\
iframe{width:100%;height:70vh;border:1px solid #ccc}\
#events{font:12px monospace;max-height:20em;overflow:auto}";

/// The script: the event stream from `from`, each event listed and the board fetched again.
const SCRIPT: &str = r#"(function(){
var live=document.getElementById('live'),log=document.getElementById('events'),
conn=document.getElementById('conn'),lanes=document.getElementById('lanes'),
busy=false,again=false,lanesAt=0;
function board(){if(busy){again=true;return;}busy=true;
fetch('/board').then(function(r){return r.text();}).then(function(t){live.innerHTML=t;})
.finally(function(){busy=false;if(again){again=false;board();}});
var now=Date.now();if(lanes&&now-lanesAt>5000){lanesAt=now;lanes.src='/report?t='+now;}}
var es=new EventSource('/events?from='+live.dataset.from);
es.onopen=function(){conn.textContent='live';conn.className='';};
es.onerror=function(){conn.textContent='disconnected, retrying';conn.className='down';};
es.onmessage=function(m){var e;try{e=JSON.parse(m.data);}catch(x){return;}
var li=document.createElement('li');
li.textContent='#'+e.seq+' '+String(e.at).slice(11,19)+' '+e.event+(e.udid?' '+e.udid:'');
log.insertBefore(li,log.firstChild);while(log.children.length>200)log.removeChild(log.lastChild);
board();};
})();"#;

/// The whole page: the board rendered at journal byte `from`, the swimlanes and the event list.
pub fn page(trial: &str, board: &str, from: u64) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>lab watch — {t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <span id=\"conn\">connecting…</span>\n<h1>lab watch — {t}</h1>\n\
         <p>Read-only: this page follows the run's journal and changes nothing.</p>\n\
         <div id=\"live\" data-from=\"{from}\">\n{board}</div>\n\
         <h2>Journal events since this page was opened</h2>\n<ol id=\"events\" reversed></ol>\n\
         <h2>Swimlanes</h2>\n\
         <iframe id=\"lanes\" src=\"/report\" title=\"report.html of the journal so far\"></iframe>\n\
         <script>{SCRIPT}</script>\n</body>\n</html>\n",
        t = esc(trial),
    )
}

/// The page while `lab run --watch` has not opened its run folder yet: it reloads itself.
pub fn waiting() -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"1\">\n<title>lab watch</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<p>Waiting for the run to open its run \
         folder…</p>\n</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::fold::Fold;
    use crate::trial::live_view::{Limits, board};

    #[test]
    fn every_device_is_a_row_and_journal_text_is_escaped() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/rehearsal/journal.jsonl");
        let entries = crate::journal::read(&path).unwrap().entries;
        let mut fold = Fold::of(&entries);
        let first = fold.order[0].clone();
        fold.devices.get_mut(&first).unwrap().arm = Some("<script>".into());
        let b = board(&fold, Limits::default(), &entries.last().unwrap().at);
        let html = board_html(&b, 7);
        let doc = scraper::Html::parse_fragment(&html);
        let rows = scraper::Selector::parse("tbody tr").unwrap();
        assert_eq!(doc.select(&rows).count(), fold.order.len());
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(html.contains("data-seq=\"7\""));
        let p = page("t<1>", &html, 123);
        assert!(p.contains("data-from=\"123\"") && p.contains("lab watch — t&lt;1&gt;"));
        // Nothing from elsewhere: no URL with a scheme (the page needs no network).
        assert!(!p.contains("http://") && !p.contains("https://"));
    }
}
