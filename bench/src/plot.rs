//! `--plot FILE.svg`: the latency distribution of every figure of a run, as percentile curves.
//!
//! The x axis is the percentile on a "nines" scale (`-log10(1 - q)`: 0 = p0, 1 = p90, 2 = p99,
//! 3 = p99.9), the y axis the latency on a log scale. Uses plotters' SVG backend only (no fonts
//! or system libraries: the SVG names a font family and the viewer draws the text).

use std::path::Path;

use plotters::prelude::*;

/// Errors from drawing a plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Drawing failed.
    #[error("drawing the latency plot {path}: {message}")]
    Draw {
        /// The file.
        path: String,
        /// What plotters said.
        message: String,
    },
    /// Nothing to plot.
    #[error("no latency figures to plot")]
    Empty,
}

/// One curve: a name and `(percentile, latency_ns)` points.
pub struct Curve {
    /// Legend label.
    pub name: String,
    /// `(percentile in 0..=100, latency in ns)`.
    pub points: Vec<(f64, f64)>,
}

fn nines(percentile: f64) -> f64 {
    let q = (percentile / 100.0).min(0.99999);
    -(1.0 - q).log10()
}

/// The axis label of `x` nines: 0 -> `p0`, 1 -> `p90`, 2 -> `p99`, 3 -> `p99.9`, ...
pub fn percentile_label(x: f64) -> String {
    let n = x.max(0.0).round() as usize;
    match n {
        0 => "p0".into(),
        1 => "p90".into(),
        n => format!("p99{}{}", if n > 2 { "." } else { "" }, "9".repeat(n - 2)),
    }
}

/// Writes the curves to `path` as SVG.
pub fn write_svg(path: &Path, title: &str, curves: &[Curve]) -> Result<(), PlotError> {
    let draw_err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let all: Vec<(f64, f64)> = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|&(p, v)| (nines(p), v.max(1.0))))
        .collect();
    if all.is_empty() {
        return Err(PlotError::Empty);
    }
    let x_max = all.iter().map(|p| p.0).fold(1.0f64, f64::max).ceil();
    let y_min = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min) * 0.8;
    let y_max = all.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.25;

    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(|e| draw_err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile (1 = p90, 2 = p99, 3 = p99.9)")
        .y_desc("latency")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| crate::report::fmt_ns(*y))
        .draw()
        .map_err(|e| draw_err(&e))?;
    for (i, c) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                c.points.iter().map(|&(p, v)| (nines(p), v.max(1.0))),
                color.stroke_width(2),
            ))
            .map_err(|e| draw_err(&e))?
            .label(c.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| draw_err(&e))?;
    root.present().map_err(|e| draw_err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_every_curve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let curves = vec![
            Curve {
                name: "a-rtt".into(),
                points: vec![(0.0, 100.0), (50.0, 150.0), (99.0, 400.0), (99.9, 900.0)],
            },
            Curve {
                name: "b-rtt".into(),
                points: vec![(0.0, 1000.0), (99.9, 9000.0)],
            },
        ];
        write_svg(&path, "test", &curves).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("a-rtt") && svg.contains("b-rtt"));
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn axis_labels_count_nines() {
        assert_eq!(percentile_label(0.0), "p0");
        assert_eq!(percentile_label(1.0), "p90");
        assert_eq!(percentile_label(2.0), "p99");
        assert_eq!(percentile_label(3.0), "p99.9");
        assert_eq!(percentile_label(5.0), "p99.999");
    }

    #[test]
    fn no_curves_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_svg(&dir.path().join("p.svg"), "t", &[]).unwrap_err();
        assert!(matches!(err, PlotError::Empty));
    }
}
