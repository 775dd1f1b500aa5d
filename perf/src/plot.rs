//! Hand-written SVG plots of one or more run results: throughput over time, latency over time
//! and the percentile spectrum. No dependencies; the output opens in any browser and renders
//! on GitHub. Each run gets one colour; line style tells the series apart.

use std::fmt::Write;

use crate::kafka::result::RunResult;

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 260.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 200.0;
const MARGIN_TOP: f64 = 64.0;
const PANEL_GAP: f64 = 70.0;
/// Average advance of a 12 px sans-serif character, for sizing the legend.
const LEGEND_CHAR_WIDTH: f64 = 6.8;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

struct Series {
    points: Vec<(f64, f64)>,
    colour: &'static str,
    dash: &'static str,
    name: String,
}

/// An SVG with three panels for `results` (one colour per result).
pub fn render(results: &[&RunResult]) -> String {
    let height = MARGIN_TOP + 3.0 * PANEL_HEIGHT + 3.0 * PANEL_GAP;
    // The legend right of the panels is as wide as its longest entry: a label plus a series
    // name such as " publish p99" (12 characters).
    let longest_label = results
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0);
    let legend_width = 42.0 + LEGEND_CHAR_WIDTH * (longest_label + 12) as f64;
    let width = WIDTH.max(WIDTH - MARGIN_RIGHT + legend_width);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = results
        .iter()
        .map(|r| format!("{} ({})", r.label, r.workload.name))
        .collect::<Vec<_>>()
        .join(" vs ");
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" font-size="15" font-weight="bold">{}</text>"#,
        MARGIN_LEFT,
        escape(&title)
    );

    let mut throughput = Vec::new();
    let mut latency = Vec::new();
    let mut spectrum = Vec::new();
    for (index, result) in results.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let label = &result.label;
        let pick = |f: &dyn Fn(&crate::kafka::result::SeriesPoint) -> f64| -> Vec<(f64, f64)> {
            result.series.iter().map(|p| (p.t_s, f(p))).collect()
        };
        throughput.push(Series {
            points: pick(&|p| p.publish_mb_per_s),
            colour,
            dash: "",
            name: format!("{label} publish"),
        });
        throughput.push(Series {
            points: pick(&|p| p.consume_mb_per_s),
            colour,
            dash: "6,4",
            name: format!("{label} consume"),
        });
        let positive = |points: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
            points.into_iter().filter(|(_, v)| *v > 0.0).collect()
        };
        latency.push(Series {
            points: positive(pick(&|p| p.publish_p50_us)),
            colour,
            dash: "2,3",
            name: format!("{label} publish p50"),
        });
        latency.push(Series {
            points: positive(pick(&|p| p.publish_p99_us)),
            colour,
            dash: "",
            name: format!("{label} publish p99"),
        });
        latency.push(Series {
            points: positive(pick(&|p| p.end_to_end_p99_us)),
            colour,
            dash: "6,4",
            name: format!("{label} e2e p99"),
        });
        let to_nines = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
            points
                .iter()
                .filter(|(_, v)| *v > 0.0)
                .map(|(percentile, value)| (nines(*percentile), *value))
                .collect()
        };
        spectrum.push(Series {
            points: to_nines(&result.publish_spectrum),
            colour,
            dash: "",
            name: format!("{label} publish"),
        });
        spectrum.push(Series {
            points: to_nines(&result.end_to_end_spectrum),
            colour,
            dash: "6,4",
            name: format!("{label} end-to-end"),
        });
    }

    let top = MARGIN_TOP;
    panel(
        &mut svg,
        top,
        "Throughput over time",
        "seconds",
        "MB/s",
        &throughput,
        Scale::Linear,
        Scale::Linear,
    );
    let top = top + PANEL_HEIGHT + PANEL_GAP;
    panel(
        &mut svg,
        top,
        "Latency over time (per second)",
        "seconds",
        "µs",
        &latency,
        Scale::Linear,
        Scale::Log,
    );
    let top = top + PANEL_HEIGHT + PANEL_GAP;
    panel(
        &mut svg,
        top,
        "Latency by percentile",
        "percentile",
        "µs",
        &spectrum,
        Scale::Nines,
        Scale::Log,
    );
    svg.push_str("</svg>\n");
    svg
}

/// Percentile (0..=100) as "nines": 90% -> 1, 99% -> 2, 99.9% -> 3.
fn nines(percentile: f64) -> f64 {
    let remaining = (1.0 - percentile / 100.0).max(1e-6);
    -remaining.log10()
}

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log,
    Nines,
}

#[allow(clippy::too_many_arguments)]
fn panel(
    svg: &mut String,
    top: f64,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_scale: Scale,
    y_scale: Scale,
) {
    let left = MARGIN_LEFT;
    let width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let height = PANEL_HEIGHT;
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top - 8.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#999"/>"##
    );
    if all.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" fill="#666">no data</text>"##,
            left + width / 2.0 - 20.0,
            top + height / 2.0
        );
        return;
    }
    let (mut x_min, mut x_max) = bounds(all.iter().map(|p| p.0));
    let (mut y_min, mut y_max) = bounds(all.iter().map(|p| p.1));
    match x_scale {
        Scale::Nines => {
            x_min = 0.0;
            x_max = x_max.ceil().max(2.0);
        }
        _ => {
            x_min = x_min.min(0.0);
            if x_max <= x_min {
                x_max = x_min + 1.0;
            }
        }
    }
    match y_scale {
        Scale::Log => {
            y_min = 10f64.powf(y_min.max(1e-3).log10().floor());
            y_max = 10f64.powf(y_max.max(y_min * 10.0).log10().ceil());
        }
        _ => {
            y_min = 0.0;
            y_max = nice_ceiling(y_max.max(1e-9));
        }
    }
    let x_of = |x: f64| left + (x - x_min) / (x_max - x_min) * width;
    let y_of = |y: f64| {
        let fraction = match y_scale {
            Scale::Log => (y.max(y_min).log10() - y_min.log10()) / (y_max.log10() - y_min.log10()),
            _ => (y - y_min) / (y_max - y_min),
        };
        top + height - fraction * height
    };
    // Y ticks.
    let y_ticks: Vec<f64> = match y_scale {
        Scale::Log => {
            let mut ticks = Vec::new();
            let mut value = y_min;
            while value <= y_max * 1.0001 {
                ticks.push(value);
                value *= 10.0;
            }
            ticks
        }
        _ => (0..=5).map(|i| y_max * i as f64 / 5.0).collect(),
    };
    for value in y_ticks {
        let y = y_of(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + width,
            left - 6.0,
            y + 4.0,
            format_number(value)
        );
    }
    // X ticks.
    let x_ticks: Vec<(f64, String)> = match x_scale {
        Scale::Nines => (0..=x_max as i32)
            .map(|n| {
                let label = match n {
                    0 => "0".to_string(),
                    1 => "90".to_string(),
                    _ => format!("99.{}", "9".repeat(n as usize - 2))
                        .replace("99.", "99.")
                        .trim_end_matches('.')
                        .to_string(),
                };
                (n as f64, label)
            })
            .collect(),
        _ => {
            let step = nice_ceiling((x_max - x_min) / 8.0);
            let mut ticks = Vec::new();
            let mut value = 0.0;
            while value <= x_max + 1e-9 {
                ticks.push((value, format_number(value)));
                value += step;
            }
            ticks
        }
    };
    for (value, label) in x_ticks {
        let x = x_of(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            top + height,
            top + height + 16.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + width / 2.0,
        top + height + 34.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>"#,
        left - 55.0,
        top + height / 2.0,
        left - 55.0,
        top + height / 2.0,
        escape(y_label)
    );
    // Lines and legend.
    for (index, line) in series.iter().enumerate() {
        let legend_y = top + 14.0 + index as f64 * 16.0;
        let legend_x = left + width + 12.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{}" stroke-width="2" stroke-dasharray="{}"/><text x="{}" y="{}">{}</text>"#,
            legend_x + 24.0,
            line.colour,
            line.dash,
            legend_x + 30.0,
            legend_y + 4.0,
            escape(&line.name)
        );
        if line.points.is_empty() {
            continue;
        }
        let path: Vec<String> = line
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", x_of(*x), y_of(*y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8" stroke-dasharray="{}" points="{}"/>"#,
            line.colour,
            line.dash,
            path.join(" ")
        );
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// 1, 2 or 5 times a power of ten, at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    let power = 10f64.powf(value.log10().floor());
    for multiple in [1.0, 2.0, 5.0, 10.0] {
        if multiple * power >= value {
            return multiple * power;
        }
    }
    10.0 * power
}

fn format_number(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.0}M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if value >= 10.0 || value == 0.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_and_ticks() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nice_ceiling(730.0), 1000.0);
        assert_eq!(nice_ceiling(0.15), 0.2);
    }
}
