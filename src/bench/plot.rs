//! `fleetmoe bench --plot FILE.svg`: the roofline at a glance. One panel per shape, time ÷
//! floor against M (log scale) for each scheme, the peers' figures from the reference
//! table dashed beside ours in the same colour, and the floor itself (1.0) drawn, so
//! "how far from the hardware, and from the others" reads off one picture. Plain SVG
//! written here: a few lines and rectangles need no plotting library and no fonts.

use super::BenchRow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 260.0;
const MARGIN: f64 = 48.0;
const LEGEND_H: f64 = 22.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

/// (shape index, scheme index, peer) of a series.
type SeriesKey = (usize, usize, Option<&'static str>);

/// One line of a panel: ours or a peer's, for one scheme.
struct Series {
    scheme: String,
    /// `None`: fleetmoe; otherwise the peer's name.
    peer: Option<&'static str>,
    /// (M, time ÷ floor), by M.
    points: Vec<(usize, f64)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG for `rows` (any order; cells with a zero floor are left out), titled `title`.
pub fn roofline_svg(rows: &[BenchRow], title: &str) -> String {
    // shape → series, in first-seen order of shapes and schemes.
    let mut shapes: Vec<&str> = Vec::new();
    let mut schemes: Vec<String> = Vec::new();
    let mut series: BTreeMap<SeriesKey, Vec<(usize, f64)>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.floor_us > 0.0 && r.us.is_finite()) {
        let s = shapes
            .iter()
            .position(|&x| x == r.shape)
            .unwrap_or_else(|| {
                shapes.push(r.shape);
                shapes.len() - 1
            });
        let c = schemes
            .iter()
            .position(|x| *x == r.scheme)
            .unwrap_or_else(|| {
                schemes.push(r.scheme.clone());
                schemes.len() - 1
            });
        series
            .entry((s, c, None))
            .or_default()
            .push((r.tokens, r.us / r.floor_us));
        for &(peer, us) in &r.peers {
            series
                .entry((s, c, Some(peer)))
                .or_default()
                .push((r.tokens, us / r.floor_us));
        }
    }
    let cols = shapes.len().clamp(1, 2);
    let grid_rows = shapes.len().div_ceil(cols).max(1);
    let width = cols as f64 * (PANEL_W + MARGIN) + MARGIN;
    let legend_lines = schemes.len() + series.keys().filter(|k| k.2.is_some()).count();
    let height =
        grid_rows as f64 * (PANEL_H + MARGIN) + MARGIN + 30.0 + legend_lines as f64 * LEGEND_H;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.0}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (s, shape) in shapes.iter().enumerate() {
        let x0 = MARGIN + (s % cols) as f64 * (PANEL_W + MARGIN);
        let y0 = 40.0 + (s / cols) as f64 * (PANEL_H + MARGIN);
        let mine: Vec<Series> = series
            .iter()
            .filter(|(k, _)| k.0 == s)
            .map(|(k, p)| {
                let mut points = p.clone();
                points.sort_by_key(|q| q.0);
                Series {
                    scheme: schemes[k.1].clone(),
                    peer: k.2,
                    points,
                }
            })
            .collect();
        panel(&mut svg, shape, &mine, &schemes, x0, y0);
    }
    // Legend: a swatch per scheme (ours solid), then each peer series dashed.
    let mut y = 40.0 + grid_rows as f64 * (PANEL_H + MARGIN);
    let mut entry = |svg: &mut String, colour: &str, dashed: bool, label: String| {
        let _ = writeln!(
            svg,
            r#"<line x1="{MARGIN}" y1="{y:.0}" x2="{:.0}" y2="{y:.0}" stroke="{colour}" stroke-width="2"{}/><text x="{:.0}" y="{:.0}">{}</text>"#,
            MARGIN + 28.0,
            if dashed {
                r#" stroke-dasharray="5,4""#
            } else {
                ""
            },
            MARGIN + 36.0,
            y + 4.0,
            escape(&label)
        );
        y += LEGEND_H;
    };
    for (c, scheme) in schemes.iter().enumerate() {
        entry(
            &mut svg,
            COLOURS[c % COLOURS.len()],
            false,
            format!("fleetmoe {scheme}"),
        );
    }
    let mut peers: Vec<(usize, &str)> = series
        .keys()
        .filter_map(|k| k.2.map(|p| (k.1, p)))
        .collect();
    peers.sort();
    peers.dedup();
    for (c, peer) in peers {
        entry(
            &mut svg,
            COLOURS[c % COLOURS.len()],
            true,
            format!("{peer} {}", schemes[c]),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// One panel: axes, the floor line, and each series as a polyline with dots.
fn panel(svg: &mut String, shape: &str, series: &[Series], schemes: &[String], x0: f64, y0: f64) {
    let ms: Vec<usize> = {
        let mut m: Vec<usize> = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        m.sort_unstable();
        m.dedup();
        m
    };
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        .ceil()
        .max(2.0);
    let (lo, hi) = match (ms.first(), ms.last()) {
        (Some(&a), Some(&b)) => ((a.max(1) as f64).log2(), (b.max(1) as f64).log2()),
        _ => (0.0, 1.0),
    };
    let span = if hi > lo { hi - lo } else { 1.0 };
    let px = |m: usize| x0 + ((m.max(1) as f64).log2() - lo) / span * PANEL_W;
    let py = |v: f64| y0 + PANEL_H - v / ymax * PANEL_H;
    let _ = writeln!(
        svg,
        r##"<g><rect x="{x0:.0}" y="{y0:.0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#888"/><text x="{:.0}" y="{:.0}" text-anchor="middle" font-weight="bold">{}</text>"##,
        x0 + PANEL_W / 2.0,
        y0 - 6.0,
        escape(shape)
    );
    for &m in &ms {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.0}" text-anchor="middle">{m}</text>"##,
            px(m),
            y0 + PANEL_H + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.0}" y="{:.0}" text-anchor="middle">tokens M</text>"#,
        x0 + PANEL_W / 2.0,
        y0 + PANEL_H + 32.0
    );
    let step = (ymax / 5.0).ceil().max(1.0);
    let mut v = 0.0;
    while v <= ymax {
        let _ = writeln!(
            svg,
            r##"<line x1="{x0:.0}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#eee"/><text x="{:.0}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            x0 + PANEL_W,
            x0 - 4.0,
            py(v) + 4.0,
            y = py(v)
        );
        v += step;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{x0:.0}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#000" stroke-dasharray="2,3"/><text x="{:.0}" y="{:.1}">floor</text>"##,
        x0 + PANEL_W,
        x0 + PANEL_W - 34.0,
        py(1.0) - 4.0,
        y = py(1.0)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate({:.0},{:.0}) rotate(-90)" text-anchor="middle">time ÷ floor</text>"#,
        x0 - 30.0,
        y0 + PANEL_H / 2.0
    );
    for s in series {
        let c = schemes.iter().position(|x| *x == s.scheme).unwrap_or(0);
        let colour = COLOURS[c % COLOURS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(m, v)| format!("{:.1},{:.1}", px(m), py(v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline class="{}" data-scheme="{}" points="{}" fill="none" stroke="{colour}" stroke-width="2"{}/>"#,
            if s.peer.is_some() { "peer" } else { "fleetmoe" },
            escape(&s.scheme),
            points.join(" "),
            if s.peer.is_some() {
                r#" stroke-dasharray="5,4""#
            } else {
                ""
            }
        );
        for &(m, v) in &s.points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}" stroke="{colour}"><title>{} {}{}: M={m}, {v:.2}× floor</title></circle>"#,
                px(m),
                py(v),
                if s.peer.is_some() { "white" } else { colour },
                escape(shape),
                escape(&s.scheme),
                s.peer.map(|p| format!(" ({p})")).unwrap_or_default()
            );
        }
    }
    svg.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(shape: &'static str, scheme: &str, m: usize, us: f64, peer: Option<f64>) -> BenchRow {
        BenchRow {
            shape,
            scheme: scheme.into(),
            tokens: m,
            backend: "cuda-bf16".into(),
            us,
            floor_us: 10.0,
            lora_us: None,
            api_us: None,
            routed_us: None,
            host_us: None,
            peers: peer.map(|p| vec![("vLLM-Triton", p)]).unwrap_or_default(),
        }
    }

    #[test]
    fn the_svg_parses_with_one_line_per_series_and_a_dot_per_cell() {
        let rows = [
            row("mixtral-8x7b", "bf16", 1, 12.0, Some(13.0)),
            row("mixtral-8x7b", "bf16", 64, 15.0, Some(14.0)),
            row("mixtral-8x7b", "fp8", 1, 20.0, None),
            row("mixtral-8x7b", "fp8", 64, 30.0, None),
            row("qwen3-30b-a3b", "bf16", 16, 40.0, None),
        ];
        let svg = roofline_svg(&rows, "H200 <test> & more");
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        let lines: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .collect();
        // mixtral: bf16, its peer, fp8; qwen3: bf16.
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines
                .iter()
                .filter(|n| n.attribute("class") == Some("peer"))
                .count(),
            1
        );
        let dots = doc
            .descendants()
            .filter(|n| n.has_tag_name("circle"))
            .count();
        assert_eq!(dots, 5 + 2);
        // Each polyline's points lie inside the picture.
        let w: f64 = root.attribute("width").unwrap().parse().unwrap();
        let h: f64 = root.attribute("height").unwrap().parse().unwrap();
        for l in &lines {
            for p in l.attribute("points").unwrap().split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((0.0..=w).contains(&x) && (0.0..=h).contains(&y), "{p}");
            }
        }
        assert!(svg.contains("H200 &lt;test&gt; &amp; more"));
    }

    #[test]
    fn no_rows_still_make_a_valid_picture() {
        let svg = roofline_svg(&[], "empty");
        roxmltree::Document::parse(&svg).expect("well-formed SVG");
    }
}
