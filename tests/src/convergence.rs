//! A load run's convergence over time: per 100 ms since the assignment, how many
//! devices were verified installed and how many device requests per second the fleet
//! made; and that series drawn as an SVG chart.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use serde::Serialize;

/// The width of one step of the series.
pub const STEP_SECONDS: f64 = 0.1;

/// One step of the series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the assignment, at the end of the step.
    pub t: f64,
    /// Devices verified installed by then.
    pub installed: usize,
    /// Device requests per second during the step.
    pub requests_per_second: f64,
}

/// Builds the series from each device's time to installed (seconds, any order) and the
/// fleet's request counter read every [`STEP_SECONDS`] from the assignment on
/// (`requests[0]` at the assignment).
pub fn series(latencies: &[f64], requests: &[u64]) -> Vec<Sample> {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.last().copied().unwrap_or(0.0);
    let steps = ((last / STEP_SECONDS).ceil() as usize)
        .max(requests.len().saturating_sub(1))
        .max(1);
    (0..steps)
        .map(|k| {
            // Divided, not multiplied: 3 / 10 prints as 0.3.
            let t = (k + 1) as f64 / (1.0 / STEP_SECONDS);
            let installed = sorted.partition_point(|l| *l <= t + 1e-9);
            let made = match (requests.get(k), requests.get(k + 1)) {
                (Some(a), Some(b)) => b.saturating_sub(*a),
                _ => 0,
            };
            Sample {
                t,
                installed,
                requests_per_second: made as f64 / STEP_SECONDS,
            }
        })
        .collect()
}

/// Draws the series to `path` (SVG): devices installed on the left axis, device
/// requests per second on the right.
pub fn draw(path: &Path, title: &str, devices: usize, series: &[Sample]) -> anyhow::Result<()> {
    let is_svg = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !is_svg {
        anyhow::bail!(
            "the chart is drawn as SVG: name the file *.svg (not {})",
            path.display()
        );
    }
    let max_t = series.last().map_or(1.0, |s| s.t).max(STEP_SECONDS);
    let max_rps = series
        .iter()
        .map(|s| s.requests_per_second)
        .fold(1.0, f64::max);
    let fail = |e: &dyn std::fmt::Display| anyhow!("cannot draw the chart: {e}");
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .right_y_label_area_size(80)
        .build_cartesian_2d(0f64..max_t, 0f64..devices.max(1) as f64)
        .map_err(|e| fail(&e))?
        .set_secondary_coord(0f64..max_t, 0f64..max_rps * 1.1);
    chart
        .configure_mesh()
        .x_desc("seconds since the assignment")
        .y_desc("devices verified installed")
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("device requests per second")
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(
            series.iter().map(|s| (s.t, s.installed as f64)),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| fail(&e))?
        .label("installed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_secondary_series(LineSeries::new(
            series.iter().map(|s| (s.t, s.requests_per_second)),
            RED,
        ))
        .map_err(|e| fail(&e))?
        .label("requests/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_counts_installs_and_requests_per_step() {
        let s = series(&[0.05, 0.15, 0.15, 0.31], &[0, 10, 30, 30, 40]);
        let installed: Vec<usize> = s.iter().map(|x| x.installed).collect();
        assert_eq!(installed, [1, 3, 3, 4]);
        let rps: Vec<f64> = s.iter().map(|x| x.requests_per_second.round()).collect();
        assert_eq!(rps, [100.0, 200.0, 0.0, 100.0]);
    }

    #[test]
    fn a_chart_is_an_svg_with_both_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let s = series(&[0.1, 0.2], &[0, 5, 9]);
        draw(&path, "2 devices", 2, &s).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("installed") && svg.contains("requests/s"));
        assert!(draw(&dir.path().join("c.png"), "x", 2, &s).is_err());
    }
}
