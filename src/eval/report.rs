//! Rendering the evaluation report: one list of sections becomes `report.md` (figures as
//! SVG files beside it) and a self-contained `report.html` (figures inline).

use std::fmt::Write as _;

/// A piece of a report section.
#[derive(Clone, Debug)]
pub enum Block {
    Para(String),
    Table {
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Figure {
        /// File name of the SVG written beside the Markdown report.
        file: String,
        svg: String,
        caption: String,
    },
}

#[derive(Clone, Debug)]
pub struct Section {
    pub title: String,
    pub blocks: Vec<Block>,
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> Block {
    Block::Table {
        header: header.iter().map(|s| s.to_string()).collect(),
        rows,
    }
}

pub fn markdown(title: &str, sections: &[Section]) -> String {
    let mut s = format!("# {title}\n");
    for sec in sections {
        let _ = writeln!(s, "\n## {}\n", sec.title);
        for b in &sec.blocks {
            match b {
                Block::Para(p) => {
                    let _ = writeln!(s, "{p}\n");
                }
                Block::Table { header, rows } => {
                    let _ = writeln!(s, "| {} |", header.join(" | "));
                    let _ = writeln!(s, "|{}", "---|".repeat(header.len()));
                    for r in rows {
                        let _ = writeln!(s, "| {} |", r.join(" | "));
                    }
                    s.push('\n');
                }
                Block::Figure { file, caption, .. } => {
                    let _ = writeln!(s, "![{caption}]({file})\n\n*{caption}*\n");
                }
            }
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Markdown emphasis and code in table cells and paragraphs, as HTML.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    let mut code = false;
    let e = esc(s);
    let mut chars = e.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '`' {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
        } else if c == '*' && chars.peek() == Some(&'*') && !code {
            chars.next();
            out.push_str(if bold { "</b>" } else { "<b>" });
            bold = !bold;
        } else {
            out.push(c);
        }
    }
    out
}

pub fn html(title: &str, sections: &[Section]) -> String {
    let mut s = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0;font-size:0.9em}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}\
         th{{background:#f3f3f3}} figure{{margin:1em 0}} figcaption{{font-style:italic;color:#555}}\
         </style></head><body>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
    for sec in sections {
        let _ = writeln!(s, "<h2>{}</h2>", esc(&sec.title));
        for b in &sec.blocks {
            match b {
                Block::Para(p) => {
                    let _ = writeln!(s, "<p>{}</p>", inline(p));
                }
                Block::Table { header, rows } => {
                    s.push_str("<table><tr>");
                    for h in header {
                        let _ = write!(s, "<th>{}</th>", inline(h));
                    }
                    s.push_str("</tr>\n");
                    for r in rows {
                        s.push_str("<tr>");
                        for c in r {
                            let _ = write!(s, "<td>{}</td>", inline(c));
                        }
                        s.push_str("</tr>\n");
                    }
                    s.push_str("</table>\n");
                }
                Block::Figure { svg, caption, .. } => {
                    let _ = writeln!(
                        s,
                        "<figure>{svg}<figcaption>{}</figcaption></figure>",
                        esc(caption)
                    );
                }
            }
        }
    }
    s.push_str("</body></html>\n");
    s
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

fn nice_range(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// A line chart: each series is (name, points); `x_labels` optionally names the ticks at
/// the given x positions.
pub fn line_chart(
    series: &[(String, Vec<(f64, f64)>)],
    x_label: &str,
    y_label: &str,
    x_ticks: &[(f64, String)],
    y_range: Option<(f64, f64)>,
) -> String {
    let (w, h, ml, mr, mt, mb) = (640.0, 360.0, 60.0, 150.0, 20.0, 50.0);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let (x0, x1) = nice_range(
        pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
        pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
    );
    let (y0, y1) = y_range.unwrap_or_else(|| {
        nice_range(
            pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
            pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
        )
    });
    let px = |x: f64| ml + (x - x0) / (x1 - x0) * (w - ml - mr);
    let py = |y: f64| h - mb - (y - y0) / (y1 - y0) * (h - mt - mb);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
         <line x1=\"{ml}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>\n\
         <line x1=\"{ml}\" y1=\"{mt}\" x2=\"{ml}\" y2=\"{}\" stroke=\"#333\"/>\n",
        h - mb,
        w - mr,
        h - mb,
        h - mb
    );
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let _ = writeln!(
            s,
            "<line x1=\"{ml}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#eee\"/><text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{4:.3}</text>",
            py(y),
            w - mr,
            ml - 4.0,
            py(y) + 4.0,
            y
        );
    }
    let ticks: Vec<(f64, String)> = if x_ticks.is_empty() {
        (0..=4)
            .map(|i| {
                let x = x0 + (x1 - x0) * i as f64 / 4.0;
                (x, format!("{x:.0}"))
            })
            .collect()
    } else {
        x_ticks.to_vec()
    };
    for (x, label) in ticks {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            px(x),
            h - mb + 15.0,
            esc(&label)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n<text x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">{}</text>",
        (ml + w - mr) / 2.0,
        h - 10.0,
        esc(x_label),
        (mt + h - mb) / 2.0,
        (mt + h - mb) / 2.0,
        esc(y_label)
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for p in &path {
            let (x, y) = p.split_once(',').expect("point");
            let _ = writeln!(
                s,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{color}\"/>"
            );
        }
        let ly = mt + 14.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            "<line x1=\"{0}\" y1=\"{1:.1}\" x2=\"{2}\" y2=\"{1:.1}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{3}\" y=\"{4:.1}\">{5}</text>",
            w - mr + 10.0,
            ly,
            w - mr + 30.0,
            w - mr + 35.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Horizontal bars (name, value), with an optional reference line.
pub fn bar_chart(bars: &[(String, f64)], x_label: &str, reference: Option<f64>) -> String {
    let (w, row, ml, mr) = (640.0, 22.0, 200.0, 60.0);
    let h = 40.0 + row * bars.len() as f64;
    let max = bars
        .iter()
        .map(|b| b.1)
        .chain(reference)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let px = |v: f64| ml + v.max(0.0) / max * (w - ml - mr);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    );
    for (i, (name, v)) in bars.iter().enumerate() {
        let y = 10.0 + row * i as f64;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><rect x=\"{ml}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{v:.4}</text>",
            ml - 6.0,
            y + 14.0,
            esc(name),
            y + 3.0,
            px(*v) - ml,
            row - 6.0,
            COLORS[i % COLORS.len()],
            px(*v) + 4.0,
            y + 14.0
        );
    }
    if let Some(r) = reference {
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"5\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>",
            px(r),
            h - 25.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n</svg>",
        (ml + w - mr) / 2.0,
        h - 8.0,
        esc(x_label)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_html_render_tables_and_figures() {
        let sections = vec![Section {
            title: "Gates".into(),
            blocks: vec![
                Block::Para("a **bold** `code` <tag>".into()),
                table(
                    &["gate", "status"],
                    vec![vec!["x < 1".into(), "**PASS**".into()]],
                ),
                Block::Figure {
                    file: "f.svg".into(),
                    svg: line_chart(
                        &[("s".into(), vec![(0.0, 1.0), (1.0, 0.5)])],
                        "x",
                        "y",
                        &[],
                        None,
                    ),
                    caption: "cap".into(),
                },
            ],
        }];
        let md = markdown("R", &sections);
        assert!(
            md.contains("| gate | status |\n|---|---|\n| x < 1 | **PASS** |"),
            "{md}"
        );
        assert!(md.contains("![cap](f.svg)"));
        let h = html("R", &sections);
        assert!(
            h.contains("<b>bold</b> <code>code</code> &lt;tag&gt;"),
            "{h}"
        );
        assert!(h.contains("<td>x &lt; 1</td><td><b>PASS</b></td>"), "{h}");
        assert!(h.contains("<svg") && h.contains("<polyline"));
        assert_eq!(h.matches("<circle").count(), 2);
    }
}
