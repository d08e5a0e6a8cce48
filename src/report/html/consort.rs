//! The CONSORT flow diagram (SVG), counts from `flow::counts_of`.

use super::{clip, esc};
use crate::report::flow;
use std::fmt::Write;

struct FlowBox {
    x: f64,
    y: f64,
    w: f64,
    title: String,
    lines: Vec<String>,
    class: &'static str,
}

const LINE_H: f64 = 16.0;
const CHAR_W: f64 = 6.6;

impl FlowBox {
    fn h(&self) -> f64 {
        26.0 + self.lines.len() as f64 * LINE_H
    }

    fn svg(&self, out: &mut String) {
        let max = ((self.w - 16.0) / CHAR_W) as usize;
        let _ = write!(
            out,
            "<rect class=\"{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"4\"/>",
            self.class,
            self.x,
            self.y,
            self.w,
            self.h()
        );
        let _ = write!(
            out,
            "<text class=\"t\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            self.x + 8.0,
            self.y + 18.0,
            esc(&clip(&self.title, max))
        );
        for (i, l) in self.lines.iter().enumerate() {
            let _ = write!(
                out,
                "<text class=\"d\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                self.x + 14.0,
                self.y + 18.0 + LINE_H * (i as f64 + 1.0),
                esc(&clip(l, max - 1))
            );
        }
        out.push('\n');
    }
}

fn arrow(out: &mut String, x1: f64, y1: f64, x2: f64, y2: f64) {
    let _ = writeln!(
        out,
        "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" marker-end=\"url(#arrowhead)\"/>"
    );
}

fn reasons(list: &[(String, usize)]) -> Vec<String> {
    list.iter().map(|(r, n)| format!("{r}: {n}")).collect()
}

pub(super) fn consort(h: &mut String, f: &flow::Flow) {
    h.push_str("<section class=\"flow\" id=\"consort\">\n<h2>CONSORT flow</h2>\n");
    let k = f.arms.len().max(1) as f64;
    let col_w = 300.0f64;
    let gap = 30.0;
    let width = (k * col_w + (k - 1.0) * gap + 40.0).max(1000.0);
    let cx = width / 2.0;
    let main_w = 320.0;
    let side_w = 290.0;
    let side_x = cx + main_w / 2.0 + 36.0;
    let mut body = String::new();
    let eligible_bottom = top_boxes(&mut body, f, cx, main_w, side_w, side_x);
    let row_y = arm_columns(&mut body, f, cx, eligible_bottom, col_w, gap);
    let height = row_y;
    let _ = write!(
        h,
        "<svg class=\"consort\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         role=\"img\" aria-label=\"CONSORT flow diagram\">\n<defs><marker id=\"arrowhead\" viewBox=\"0 0 10 10\" \
         refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" \
         style=\"fill:#52606d;stroke:none\"/></marker></defs>\n{body}</svg>\n</section>\n"
    );
}

/// Enrolled, excluded (to the side) and eligible; the eligible box's bottom edge.
fn top_boxes(
    body: &mut String,
    f: &flow::Flow,
    cx: f64,
    main_w: f64,
    side_w: f64,
    side_x: f64,
) -> f64 {
    let mut y = 14.0;
    let mut enrolled_lines = vec![format!("assessed for eligibility: {}", f.assessed)];
    if f.not_assessed > 0 {
        enrolled_lines.push(format!("not assessed: {}", f.not_assessed));
    }
    let enrolled = FlowBox {
        x: cx - main_w / 2.0,
        y,
        w: main_w,
        title: format!("Enrolled (discovered): n = {}", f.enrolled),
        lines: enrolled_lines,
        class: "main",
    };
    let excluded = FlowBox {
        x: side_x,
        y: y + enrolled.h() + 18.0,
        w: side_w,
        title: format!("Excluded: n = {}", f.excluded),
        lines: reasons(&f.excluded_by_rule),
        class: "side",
    };
    let ey = excluded.y + excluded.h() + 18.0;
    y = ey.max(enrolled.y + enrolled.h() + 40.0);
    let mut eligible_lines = Vec::new();
    if f.not_allocated > 0 {
        eligible_lines.push(format!("not allocated: {}", f.not_allocated));
    }
    let eligible = FlowBox {
        x: cx - main_w / 2.0,
        y,
        w: main_w,
        title: format!("Eligible: n = {}", f.eligible),
        lines: eligible_lines,
        class: "main",
    };
    enrolled.svg(body);
    excluded.svg(body);
    eligible.svg(body);
    arrow(body, cx, enrolled.y + enrolled.h(), cx, eligible.y - 2.0);
    let mid = excluded.y + excluded.h() / 2.0;
    arrow(body, cx, mid, side_x - 2.0, mid);
    eligible.y + eligible.h()
}

/// One column per arm under the eligible box: allocated, received, lost, analysed, aligned
/// across arms; the bottom of the drawing.
fn arm_columns(
    body: &mut String,
    f: &flow::Flow,
    cx: f64,
    eligible_bottom: f64,
    col_w: f64,
    gap: f64,
) -> f64 {
    let k = f.arms.len().max(1) as f64;
    let total_w = k * col_w + (k - 1.0) * gap;
    let left = cx - total_w / 2.0;
    let branch_y = eligible_bottom + 18.0;
    let row0 = branch_y + 22.0;
    if !f.arms.is_empty() {
        let _ = writeln!(
            body,
            "<line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{branch_y:.1}\"/>",
            eligible_bottom
        );
        let xs: Vec<f64> = (0..f.arms.len())
            .map(|i| left + i as f64 * (col_w + gap) + col_w / 2.0)
            .collect();
        let _ = writeln!(
            body,
            "<line x1=\"{:.1}\" y1=\"{branch_y:.1}\" x2=\"{:.1}\" y2=\"{branch_y:.1}\"/>",
            xs[0].min(cx),
            xs[xs.len() - 1].max(cx)
        );
        for x in &xs {
            arrow(body, *x, branch_y, *x, row0 - 2.0);
        }
    }
    // Four rows of boxes, aligned across arms.
    let stages: Vec<Vec<(String, Vec<String>)>> = f
        .arms
        .iter()
        .map(|a| {
            vec![
                (
                    format!("Allocated to {}: n = {}", a.arm, a.allocated),
                    vec![],
                ),
                (
                    format!("Received the dose: n = {}", a.received),
                    reasons(&a.not_received)
                        .into_iter()
                        .map(|r| format!("not received, {r}"))
                        .collect(),
                ),
                (
                    format!(
                        "Lost to follow-up: n = {}",
                        a.lost_to_follow_up.iter().map(|x| x.1).sum::<usize>()
                    ),
                    reasons(&a.lost_to_follow_up),
                ),
                (
                    format!("Analysed: n = {}", a.analysed),
                    a.outcomes
                        .iter()
                        .map(|(o, n)| format!("{o}: {n}"))
                        .collect(),
                ),
            ]
        })
        .collect();
    let mut row_y = row0;
    for stage in 0..4 {
        let boxes: Vec<FlowBox> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| FlowBox {
                x: left + i as f64 * (col_w + gap),
                y: row_y,
                w: col_w,
                title: s[stage].0.clone(),
                lines: s[stage].1.clone(),
                class: if stage == 0 { "arm" } else { "main" },
            })
            .collect();
        let tallest = boxes.iter().map(FlowBox::h).fold(0.0, f64::max);
        for b in &boxes {
            b.svg(body);
            if stage < 3 {
                let x = b.x + col_w / 2.0;
                arrow(body, x, b.y + b.h(), x, row_y + tallest + 28.0 - 2.0);
            }
        }
        row_y += tallest + 28.0;
    }
    if f.arms.is_empty() {
        let _ = write!(
            body,
            "<text class=\"d\" x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">No device was allocated to an arm.</text>",
            row0 + 10.0
        );
        row_y = row0 + 30.0;
    }
    row_y
}
