//! Rendering the evaluation report: one list of sections becomes `report.md` (figures as
//! SVG files beside it) and a self-contained `report.html` (figures inline). Both open
//! with a table of contents; a status is shown with a symbol (✓ ✗ ⚠ ○) in both and a
//! colour in the HTML.

use std::fmt::Write as _;

use super::gates::Status;

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
    /// A status headline with its list (a phase's verdict and its open gates).
    Callout {
        mark: Mark,
        title: String,
        items: Vec<String>,
    },
    /// Blocks folded under a one-line summary (per-seed detail under its means).
    Details {
        summary: String,
        blocks: Vec<Block>,
    },
}

#[derive(Clone, Debug)]
pub struct Section {
    pub title: String,
    pub blocks: Vec<Block>,
}

/// How a status reads at a glance: a symbol in Markdown and the terminal, a colour beside
/// it in the HTML. A table cell that starts with a mark's symbol is coloured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Pass,
    Fail,
    Invalid,
    /// Not measured, no probe, not judged.
    Open,
}

const MARKS: [Mark; 4] = [Mark::Pass, Mark::Fail, Mark::Invalid, Mark::Open];

impl Mark {
    pub fn symbol(self) -> &'static str {
        match self {
            Mark::Pass => "✓",
            Mark::Fail => "✗",
            Mark::Invalid => "⚠",
            Mark::Open => "○",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Mark::Pass => "pass",
            Mark::Fail => "fail",
            Mark::Invalid => "invalid",
            Mark::Open => "open",
        }
    }

    pub fn of_status(s: Status) -> Mark {
        match s {
            Status::Pass => Mark::Pass,
            Status::Fail => Mark::Fail,
            Status::Invalid => Mark::Invalid,
            Status::NotMeasured => Mark::Open,
        }
    }

    /// The mark a cell's text starts with.
    fn of_cell(text: &str) -> Option<Mark> {
        MARKS
            .into_iter()
            .find(|m| text.starts_with(&format!("{} ", m.symbol())))
    }
}

/// A status cell: "✓ PASS", "✗ FAIL", "⚠ INVALID"; anything else ("no probe") is open.
pub fn status(label: &str) -> String {
    let mark = match label {
        "PASS" => Mark::Pass,
        "FAIL" => Mark::Fail,
        "INVALID" => Mark::Invalid,
        _ => Mark::Open,
    };
    format!("{} {label}", mark.symbol())
}

/// A gate's status as a cell: its mark and its name.
pub fn gate_status(s: Status) -> String {
    format!("{} {s}", Mark::of_status(s).symbol())
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> Block {
    Block::Table {
        header: header.iter().map(|s| s.to_string()).collect(),
        rows,
    }
}

/// A heading's anchor as GitHub writes it for Markdown: lower case, letters, digits, `-`
/// and `_` kept, spaces as `-`, everything else dropped. The HTML uses the same ids.
pub fn anchor(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

pub fn markdown(title: &str, sections: &[Section]) -> String {
    let mut s = format!("# {title}\n\n");
    let toc: Vec<String> = sections
        .iter()
        .map(|sec| format!("[{}](#{})", sec.title, anchor(&sec.title)))
        .collect();
    let _ = writeln!(s, "Contents: {}", toc.join(" · "));
    for sec in sections {
        let _ = writeln!(s, "\n## {}\n", sec.title);
        markdown_blocks(&mut s, &sec.blocks);
    }
    s
}

fn markdown_blocks(s: &mut String, blocks: &[Block]) {
    for b in blocks {
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
            Block::Callout { mark, title, items } => {
                let _ = writeln!(s, "**{} {title}**\n", mark.symbol());
                for i in items {
                    let _ = writeln!(s, "- {i}");
                }
                if !items.is_empty() {
                    s.push('\n');
                }
            }
            Block::Details { summary, blocks } => {
                let _ = writeln!(s, "<details><summary>{}</summary>\n", esc(summary));
                markdown_blocks(s, blocks);
                s.push_str("</details>\n\n");
            }
        }
    }
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

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222;line-height:1.35}\
h1{margin:0.3em 0}\
nav.toc{font-size:0.85em;color:#555;margin-bottom:0.8em}\
nav.toc a{color:#0550ae;text-decoration:none;white-space:nowrap}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em;display:block;max-width:100%;overflow-x:auto}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
td.num{text-align:right;white-space:nowrap}\
th{background:#f3f3f3}\
td.pass{background:#dafbe1;color:#116329}\
td.fail{background:#ffebe9;color:#a40e26}\
td.invalid{background:#fff8c5;color:#7d4e00}\
td.open{color:#57606a}\
div.callout{border-left:6px solid;padding:0.3em 0.8em;margin:0.5em 0;border-radius:3px}\
div.callout p{margin:0.2em 0;font-weight:600;font-size:1.1em}\
div.callout ul{margin:0.2em 0 0.2em 1.2em;padding:0}\
div.callout.pass{border-color:#1a7f37;background:#dafbe1}\
div.callout.fail{border-color:#cf222e;background:#ffebe9}\
div.callout.invalid{border-color:#bf8700;background:#fff8c5}\
div.callout.open{border-color:#8c959f;background:#f6f8fa}\
figure{margin:0.5em 0 1.5em}\
figure svg{width:100%;max-width:820px;height:auto}\
figcaption{font-style:italic;color:#555}\
details{margin:0.5em 0}summary{cursor:pointer;color:#0550ae}";

pub fn html(title: &str, sections: &[Section]) -> String {
    let mut s = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
    let toc: Vec<String> = sections
        .iter()
        .map(|sec| {
            format!(
                "<a href=\"#{}\">{}</a>",
                anchor(&sec.title),
                esc(&sec.title)
            )
        })
        .collect();
    let _ = writeln!(s, "<nav class=\"toc\">Contents: {}</nav>", toc.join(" · "));
    for sec in sections {
        let _ = writeln!(
            s,
            "<section id=\"{}\"><h2>{}</h2>",
            anchor(&sec.title),
            esc(&sec.title)
        );
        html_blocks(&mut s, &sec.blocks);
        s.push_str("</section>\n");
    }
    s.push_str("</body></html>\n");
    s
}

/// A cell that reads as a number or an interval ("0.4123", "+0.0100", "[0.1, 0.2]",
/// "12 (3)", "—"), right-aligned in the HTML.
fn numeric(cell: &str) -> bool {
    if cell == "—" {
        return true;
    }
    let body = cell.trim_start_matches(['[', '+', '-', '−']);
    body.starts_with(|c: char| c.is_ascii_digit())
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || " .,+-−()[]%—".contains(c) || "exact".contains(c))
}

fn html_blocks(s: &mut String, blocks: &[Block]) {
    for b in blocks {
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
                        match Mark::of_cell(c) {
                            Some(m) => {
                                let _ = write!(s, "<td class=\"{}\">{}</td>", m.class(), inline(c));
                            }
                            None if numeric(c) => {
                                let _ = write!(s, "<td class=\"num\">{}</td>", inline(c));
                            }
                            None => {
                                let _ = write!(s, "<td>{}</td>", inline(c));
                            }
                        }
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
            Block::Callout { mark, title, items } => {
                let _ = write!(
                    s,
                    "<div class=\"callout {}\"><p>{} {}</p>",
                    mark.class(),
                    mark.symbol(),
                    inline(title)
                );
                if !items.is_empty() {
                    s.push_str("<ul>");
                    for i in items {
                        let _ = write!(s, "<li>{}</li>", inline(i));
                    }
                    s.push_str("</ul>");
                }
                s.push_str("</div>\n");
            }
            Block::Details { summary, blocks } => {
                let _ = writeln!(s, "<details><summary>{}</summary>", inline(summary));
                html_blocks(s, blocks);
                s.push_str("</details>\n");
            }
        }
    }
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
            esc(&legend(name))
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A legend entry that fits the chart's right margin (about 20 characters at 11 px).
fn legend(name: &str) -> String {
    const MAX: usize = 20;
    if name.chars().count() <= MAX {
        name.to_string()
    } else {
        let head: String = name.chars().take(MAX - 1).collect();
        format!("{head}…")
    }
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
        let sections = vec![
            Section {
                title: "Verdict".into(),
                blocks: vec![Block::Callout {
                    mark: Mark::Fail,
                    title: "Phase 0→1: FAIL, 1 of 2 gates pass".into(),
                    items: vec!["✗ **HR@5**: 0.4 against 0.6".into()],
                }],
            },
            Section {
                title: "Phase gates (1 − other)".into(),
                blocks: vec![
                    Block::Para("a **bold** `code` <tag>".into()),
                    table(
                        &["gate", "status"],
                        vec![
                            vec!["x < 1".into(), status("PASS")],
                            vec!["y".into(), status("NOT MEASURED")],
                        ],
                    ),
                    Block::Details {
                        summary: "Per seed".into(),
                        blocks: vec![table(&["seed"], vec![vec!["1".into()]])],
                    },
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
            },
        ];
        let md = markdown("R", &sections);
        assert!(
            md.contains("| gate | status |\n|---|---|\n| x < 1 | ✓ PASS |\n| y | ○ NOT MEASURED |"),
            "{md}"
        );
        assert!(md.contains("![cap](f.svg)"));
        assert!(
            md.contains(
                "Contents: [Verdict](#verdict) · [Phase gates (1 − other)](#phase-gates-1--other)"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "**✗ Phase 0→1: FAIL, 1 of 2 gates pass**\n\n- ✗ **HR@5**: 0.4 against 0.6\n"
            ),
            "{md}"
        );
        assert!(md.contains("<details><summary>Per seed</summary>\n\n| seed |"));
        let h = html("R", &sections);
        assert!(
            h.contains("<b>bold</b> <code>code</code> &lt;tag&gt;"),
            "{h}"
        );
        assert!(
            h.contains("<td>x &lt; 1</td><td class=\"pass\">✓ PASS</td>"),
            "{h}"
        );
        assert!(h.contains("<td class=\"open\">○ NOT MEASURED</td>"), "{h}");
        assert!(
            h.contains("<div class=\"callout fail\"><p>✗ Phase 0→1: FAIL, 1 of 2 gates pass</p><ul><li>✗ <b>HR@5</b>: 0.4 against 0.6</li></ul></div>"),
            "{h}"
        );
        // The verdict comes before everything else, and every link of the contents lands on
        // a section.
        assert!(h.find("callout").unwrap() < h.find("<table").unwrap());
        for part in h.split("href=\"#").skip(1) {
            let id = &part[..part.find('"').unwrap()];
            assert!(
                h.contains(&format!("<section id=\"{id}\">")),
                "#{id} lands nowhere"
            );
        }
        assert!(h.contains("<details><summary>Per seed</summary>"));
        // Numbers are right-aligned, words left.
        assert!(h.contains("<td class=\"num\">1</td>"), "{h}");
        assert!(numeric("[+0.0100, 0.2]") && numeric("0.0312 (exact)") && numeric("70 (12)"));
        assert!(!numeric("0→1") && !numeric("5 seeds") && !numeric("mamba"));
        assert!(h.contains("<svg") && h.contains("<polyline"));
        assert_eq!(h.matches("<circle").count(), 2);
    }

    #[test]
    fn long_legend_names_are_shortened() {
        let svg = line_chart(
            &[("a-very-long-run-directory-name-s1".into(), vec![(0.0, 1.0)])],
            "x",
            "y",
            &[],
            None,
        );
        assert!(svg.contains(">a-very-long-run-dir…</text>"), "{svg}");
    }
}
