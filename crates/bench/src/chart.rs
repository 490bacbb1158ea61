//! The SVG chart: for each program a group of bars, one per command, each the command's
//! median time divided by gcc -O2's (so gcc's bar is 1 and lower is faster), on a log
//! scale, because the interpreter and Lua 5.4 are tens of times slower than the compiled
//! code and a linear axis would flatten everything else.
//!
//! plotters draws it with only its SVG backend: text goes into the SVG as text for the
//! viewer to render, and plotters estimates its size without font files, so the chart is
//! drawn the same on a machine with no fonts installed.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::commands::{Kind, Tier};
use crate::report::Row;

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 660;
/// The band above the plot for the title and the legend.
const HEADER: u32 = 80;

/// The colour of a command's bars: jitvm's tiers in blues and greens, darkest for the
/// fastest, gcc black, the Luas warm.
fn colour(kind: Kind) -> RGBColor {
    match kind {
        Kind::Jitvm(Tier::Interp) => RGBColor(158, 202, 225),
        Kind::Jitvm(Tier::Baseline) => RGBColor(49, 130, 189),
        Kind::Jitvm(Tier::Opt) => RGBColor(8, 48, 107),
        Kind::Jitvm(Tier::Auto) => RGBColor(49, 163, 84),
        Kind::Gcc => RGBColor(40, 40, 40),
        Kind::LuaJit => RGBColor(253, 141, 60),
        Kind::Lua54 => RGBColor(203, 24, 29),
    }
}

/// Writes the chart of `rows` (commands in `columns`) to `path`. Programs without a gcc
/// time are left out, since there is nothing to normalise them to; with none at all there
/// is no chart, and the error says why.
pub fn write_svg(path: &Path, columns: &[Kind], rows: &[Row]) -> Result<(), String> {
    let groups: Vec<(&str, Vec<(Kind, f64)>)> = rows
        .iter()
        .filter_map(|row| {
            let gcc = *row.medians.get(&Kind::Gcc)?;
            let bars = columns
                .iter()
                .filter_map(|k| Some((*k, row.medians.get(k)? / gcc)))
                .collect();
            Some((row.program.as_str(), bars))
        })
        .collect();
    if groups.is_empty() {
        return Err("no program has a gcc -O2 time to normalise to".into());
    }
    draw(path, columns, &groups).map_err(|e| format!("{}: {e}", path.display()))
}

fn draw(
    path: &Path,
    columns: &[Kind],
    groups: &[(&str, Vec<(Kind, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let ratios = groups.iter().flat_map(|(_, bars)| bars.iter().map(|b| b.1));
    let (min, max) = ratios.fold((1.0f64, 1.0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
    // Room below the shortest bar and above the tallest. The bottom is just under a
    // power of ten because plotters puts the log axis's grid lines (and so its labels) at
    // powers of ten from the first one inside the range upwards (and computes that one
    // with logarithms, which could round an exact power of ten past itself).
    let bottom = 10f64.powf((min / 1.2).log10().floor()) * 0.99;
    let top = max * 1.5;

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    draw_header(&header, columns)?;

    let n = groups.len();
    let mut chart = ChartBuilder::on(&body)
        .margin_left(10)
        .margin_right(20)
        .margin_bottom(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, (bottom..top).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(30)
        .light_line_style(TRANSPARENT)
        .y_desc("median time / gcc -O2's (log scale)")
        .y_label_formatter(&one_two_five)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;

    // Each group spans 0.8 of its slot, split evenly among the commands.
    let width = 0.8 / columns.len() as f64;
    for (i, (_, bars)) in groups.iter().enumerate() {
        for (kind, ratio) in bars {
            let k = columns.iter().position(|c| c == kind).unwrap_or(0) as f64;
            let left = i as f64 - 0.4 + k * width;
            let rect = [(left, bottom), (left + width * 0.85, *ratio)];
            chart.draw_series(std::iter::once(Rectangle::new(
                rect,
                colour(*kind).filled(),
            )))?;
        }
    }
    // gcc's level, across the whole plot.
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(-0.5, 1.0), (n as f64 - 0.5, 1.0)],
        BLACK.stroke_width(1),
    )))?;

    // The program names, centred under their groups: drawn by hand on the whole canvas,
    // at the pixels of the plot's slots, because the x axis would label round numbers.
    let name_style = TextStyle::from(("sans-serif", 20).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let slot = f64::from(xs.end - xs.start) / n as f64;
    for (i, (name, _)) in groups.iter().enumerate() {
        let x = xs.start + (slot * (i as f64 + 0.5)).round() as i32;
        root.draw(&Text::new(
            name.to_string(),
            (x, ys.end + 8),
            name_style.clone(),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// The label of a y grid line: only at 1, 2 and 5 times a power of ten, so that the log
/// axis's many grid lines do not crowd the labels.
fn one_two_five(v: &f64) -> String {
    let mantissa = v / 10f64.powf(v.log10().floor());
    let near = |m: f64| (mantissa - m).abs() < 1e-6 || (mantissa - m * 10.0).abs() < 1e-5;
    if !(near(1.0) || near(2.0) || near(5.0)) {
        return String::new();
    }
    if *v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// The title, and a legend row: one coloured square and label per command.
fn draw_header(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    columns: &[Kind],
) -> Result<(), Box<dyn std::error::Error>> {
    let title =
        TextStyle::from(("sans-serif", 22).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(
        "jitvm benchmarks: median wall time relative to gcc -O2 (lower is faster)",
        (WIDTH as i32 / 2, 10),
        title,
    ))?;
    let label =
        TextStyle::from(("sans-serif", 18).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let spacing = 130;
    let start = (WIDTH as i32 - spacing * columns.len() as i32) / 2;
    for (k, kind) in columns.iter().enumerate() {
        let x = start + k as i32 * spacing;
        let y = 56;
        area.draw(&Rectangle::new(
            [(x, y - 8), (x + 16, y + 8)],
            colour(*kind).filled(),
        ))?;
        area.draw(&Text::new(kind.label(), (x + 22, y), label.clone()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn the_chart_has_a_bar_per_command_and_a_name_per_program() {
        let row = |name: &str| Row {
            program: name.into(),
            medians: BTreeMap::from([
                (Kind::Jitvm(Tier::Opt), 0.5),
                (Kind::Gcc, 0.25),
                (Kind::Lua54, 5.0),
            ]),
            failed: BTreeSet::new(),
        };
        let columns = [Kind::Jitvm(Tier::Opt), Kind::Gcc, Kind::Lua54];
        let dir = std::env::temp_dir().join(format!("jitvm-bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.svg");
        write_svg(&path, &columns, &[row("fib"), row("sieve")]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        // plotters writes each text element's text on a line of its own.
        for text in ["fib", "sieve", "opt", "gcc -O2", "lua5.4"] {
            assert!(
                svg.contains(&format!(">\n{text}\n</text>")),
                "{text} is missing"
            );
        }
        let bars = svg.matches("<rect").count();
        assert!(
            bars >= 2 * 3,
            "{bars} rectangles for 2 programs of 3 commands"
        );
    }

    #[test]
    fn the_y_axis_labels_only_one_two_and_five_times_powers_of_ten() {
        let labels: Vec<String> = [0.2, 0.3, 1.0, 3.0, 5.0, 9.0, 10.0, 20.0, 50.0, 70.0]
            .iter()
            .map(one_two_five)
            .collect();
        assert_eq!(labels, ["0.2", "", "1", "", "5", "", "10", "20", "50", ""]);
    }

    #[test]
    fn without_any_gcc_time_there_is_no_chart() {
        let row = Row {
            program: "p".into(),
            medians: BTreeMap::from([(Kind::Jitvm(Tier::Opt), 0.5)]),
            failed: BTreeSet::new(),
        };
        let err = write_svg(
            Path::new("/nonexistent/x.svg"),
            &[Kind::Jitvm(Tier::Opt)],
            &[row],
        )
        .unwrap_err();
        assert!(err.contains("gcc"), "{err}");
    }
}
