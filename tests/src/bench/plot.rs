//! SVG plots of scaling curves (plotters, SVG backend only): one line per series through the
//! medians, with min–max error bars, against the number of services on a log scale.
use std::path::Path;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::thousands;
use super::stats::Summary;
use super::BenchResult;

const COLORS: [RGBColor; 9] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// The y axis: linear from 0, or logarithmic (for curves spanning several decades, such as
/// load times from a tenth of a second to half an hour).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YAxis {
    Linear,
    Log,
}

/// One series: its label and its points (x, summary of the rounds at x).
pub type Series = (String, Vec<(f64, Summary)>);

/// Writes `file`: one line per series, x on a log scale.
pub fn plot(
    file: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_axis: YAxis,
) -> BenchResult<()> {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(x, _)| *x))
        .collect();
    if xs.is_empty() {
        return Ok(());
    }
    // Half a step of 2 beyond the outermost points on either side, and at least two decades
    // (over less, plotters labels the log axis linearly and the labels collide).
    let xmax = xs.iter().cloned().fold(1.0, f64::max) * 2.0;
    let xmin = (xs.iter().cloned().fold(f64::INFINITY, f64::min).max(1.0) / 2.0).min(xmax / 100.0);
    let ys = || series.iter().flat_map(|(_, v)| v.iter().map(|(_, s)| *s));
    let ymax = ys().map(|s| s.max).fold(0.0, f64::max);
    let root = SVGBackend::new(file, (980, 560)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<std::io::Error>| format!("plot {}: {e:?}", file.display());
    root.fill(&WHITE).map_err(e)?;
    // The legend gets its own column on the right, clear of the curves.
    let (area, legend) = root.split_horizontally(800);
    let mut builder = ChartBuilder::on(&area);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70);
    let x_range = (xmin..xmax).log_scale();
    match y_axis {
        YAxis::Linear => {
            let chart = builder
                .build_cartesian_2d(x_range, 0f64..(ymax * 1.15).max(1e-9))
                .map_err(e)?;
            draw::<RangedCoordf64>(chart, &legend, x_desc, y_desc, None, series).map_err(e)?;
        }
        YAxis::Log => {
            // A decade boundary below the smallest value and above the largest, so every
            // point sits inside the frame.
            let ymin = ys()
                .map(|s| s.min)
                .filter(|v| *v > 0.0)
                .fold(ymax, f64::min);
            let lo = 10f64.powf(ymin.max(1e-12).log10().floor());
            let hi = 10f64.powf(ymax.max(lo * 10.0).log10().ceil());
            let chart = builder
                .build_cartesian_2d(x_range, (lo..hi).log_scale())
                .map_err(e)?;
            draw(chart, &legend, x_desc, y_desc, Some(&decade_label), series).map_err(e)?;
        }
    }
    root.present().map_err(e)?;
    Ok(())
}

/// A log axis's labels: as many digits as the value needs (0.01, 0.1, 1, 10, 1,000).
fn decade_label(v: &f64) -> String {
    if *v >= 1.0 {
        thousands(v.round() as u32)
    } else {
        let digits = (-v.log10()).ceil().max(0.0) as usize;
        format!("{v:.digits$}")
    }
}

type Chart<'a, 'b, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<LogCoord<f64>, Y>>;

/// Draws the mesh, the series and the legend into a chart whatever its y axis.
fn draw<Y>(
    mut chart: Chart<'_, '_, Y>,
    legend: &DrawingArea<SVGBackend<'_>, Shift>,
    x_desc: &str,
    y_desc: &str,
    y_label: Option<&dyn Fn(&f64) -> String>,
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<std::io::Error>>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut mesh = chart.configure_mesh();
    if let Some(f) = y_label {
        mesh.y_label_formatter(f);
    }
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| {
            let v = x.round();
            if v >= 1.0 {
                thousands(v as u32)
            } else {
                String::new()
            }
        })
        .draw()?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let line: Vec<(f64, f64)> = pts.iter().map(|(x, s)| (*x, s.median)).collect();
        chart.draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))?;
        let y = 60 + 24 * i as i32;
        legend.draw(&PathElement::new(vec![(8, y), (36, y)], c.stroke_width(3)))?;
        legend.draw(&Text::new(
            label.clone(),
            (44, y - 7),
            ("sans-serif", 15).into_font().color(&BLACK),
        ))?;
        chart.draw_series(line.iter().map(|p| Circle::new(*p, 3, c.filled())))?;
        chart.draw_series(pts.iter().map(|(x, s)| {
            ErrorBar::new_vertical(*x, s.min, s.median, s.max, c.stroke_width(1), 8)
        }))?;
    }
    Ok(())
}
