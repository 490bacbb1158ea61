//! The results table: per program the median seconds of each command, then the ratios
//! that answer the questions the suite exists for (does the optimizing tier beat the
//! baseline? what does automatic tiering cost against the best forced tier? how far is
//! jitvm from gcc?), and a statement of how it was measured, so a number quoted from
//! `bench/results.md` carries its conditions with it.

use std::collections::{BTreeMap, BTreeSet};

use crate::commands::{Kind, Tier};
use crate::run::Measured;
use crate::stats::{geometric_mean, median};

/// A program's median seconds per command that passed every check.
pub type Medians = BTreeMap<Kind, f64>;

/// One program's line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub program: String,
    pub medians: Medians,
    /// Commands that failed a check: their cells say FAIL.
    pub failed: BTreeSet<Kind>,
}

impl Row {
    /// The row for `program` from its measurements.
    pub fn new(program: &str, measured: &Measured) -> Row {
        Row {
            program: program.to_string(),
            medians: measured
                .times
                .iter()
                .filter_map(|(kind, times)| Some((*kind, median(times)?)))
                .collect(),
            failed: measured.failures.iter().map(|(kind, _)| *kind).collect(),
        }
    }
}

/// The derived columns of a row; `None` where a command they need did not run or failed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ratios {
    /// Below 1 when the optimizing tier is faster than the baseline one.
    pub opt_over_baseline: Option<f64>,
    /// `--tier auto` against the fastest of the forced tiers (interp, baseline, opt): above
    /// 1 is what tiering up costs (time spent in slower tiers, compiling while running).
    pub auto_over_best_forced: Option<f64>,
    /// The fastest jitvm command, any tier, against gcc -O2.
    pub best_jitvm_over_gcc: Option<f64>,
}

/// Computes a row's ratios from its medians.
pub fn ratios(medians: &Medians) -> Ratios {
    let of = |tier| medians.get(&Kind::Jitvm(tier)).copied();
    let best = |tiers: &mut dyn Iterator<Item = Tier>| tiers.filter_map(of).reduce(f64::min);
    let over = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    Ratios {
        opt_over_baseline: over(of(Tier::Opt), of(Tier::Baseline)),
        auto_over_best_forced: over(
            of(Tier::Auto),
            best(&mut Tier::ALL.into_iter().filter(|t| t.is_forced())),
        ),
        best_jitvm_over_gcc: over(
            best(&mut Tier::ALL.into_iter()),
            medians.get(&Kind::Gcc).copied(),
        ),
    }
}

/// The geometric mean over `rows` of baseline / opt (above 1: opt is faster), and how many
/// programs it covers: those where both tiers ran and passed.
pub fn baseline_over_opt(rows: &[Row]) -> Option<(f64, usize)> {
    let values: Vec<f64> = rows
        .iter()
        .filter_map(|r| ratios(&r.medians).opt_over_baseline.map(|x| 1.0 / x))
        .collect();
    Some((geometric_mean(&values)?, values.len()))
}

/// The conditions of a measurement, for the note above the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditions {
    pub rounds: usize,
    /// `std::thread::available_parallelism`.
    pub cores: usize,
    /// The CPU model, where the system says.
    pub cpu: Option<String>,
    /// The 1-minute load average when the suite started, where the system says: on a
    /// shared machine it tells whether other work ran beside the benchmarks.
    pub load: Option<String>,
    /// Peers that were skipped because their tool is not installed.
    pub missing: Vec<Kind>,
}

impl Conditions {
    /// The conditions of this machine now, for a run of `rounds` rounds.
    pub fn of_this_machine(rounds: usize, missing: Vec<Kind>) -> Conditions {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map(|(_, model)| model.trim().to_string());
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string));
        Conditions {
            rounds,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            load,
            missing,
        }
    }

    /// The paragraph that says how the table was measured.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "Measured by `cargo run --release -p jitvm-bench` (see `bench/README.md`): {} \
             round{}, each running every command once in the order of the columns; each \
             time is the median over the rounds of the wall-clock seconds of the whole \
             process, from spawn to exit, and every run's exit status and stdout were \
             checked against the output its `.bc` documents. Machine: {} core{} \
             (`available_parallelism`)",
            self.rounds,
            if self.rounds == 1 { "" } else { "s" },
            self.cores,
            if self.cores == 1 { "" } else { "s" },
        );
        if let Some(cpu) = &self.cpu {
            text += &format!(", {cpu}");
        }
        if let Some(load) = &self.load {
            text += &format!("; load average {load} when the suite started");
        }
        text += ".";
        if !self.missing.is_empty() {
            let names: Vec<&str> = self.missing.iter().map(|k| k.label()).collect();
            text += &format!(" Not installed, so not run: {}.", names.join(", "));
        }
        text
    }
}

/// The table as Markdown, padded so that it also reads as plain text in a terminal: one
/// column per command kind in `columns`, the three ratio columns, and a last row of
/// geometric means of the ratios.
pub fn table(columns: &[Kind], rows: &[Row]) -> String {
    let mut head: Vec<String> = vec!["program".into()];
    head.extend(columns.iter().map(|k| k.label().to_string()));
    head.extend(["opt / baseline", "auto / best forced", "best jitvm / gcc"].map(String::from));
    let ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}"));
    let mut body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![row.program.clone()];
            cells.extend(columns.iter().map(|k| match row.medians.get(k) {
                _ if row.failed.contains(k) => "FAIL".to_string(),
                Some(seconds) => format!("{seconds:.3}"),
                None => "-".to_string(),
            }));
            let r = ratios(&row.medians);
            cells.extend(
                [
                    r.opt_over_baseline,
                    r.auto_over_best_forced,
                    r.best_jitvm_over_gcc,
                ]
                .map(ratio),
            );
            cells
        })
        .collect();
    let all: Vec<Ratios> = rows.iter().map(|r| ratios(&r.medians)).collect();
    let mean = |pick: fn(&Ratios) -> Option<f64>| {
        geometric_mean(&all.iter().filter_map(pick).collect::<Vec<_>>())
    };
    let mut means = vec!["geometric mean".to_string()];
    means.extend(columns.iter().map(|_| String::new()));
    means.extend([
        ratio(mean(|r| r.opt_over_baseline)),
        ratio(mean(|r| r.auto_over_best_forced)),
        ratio(mean(|r| r.best_jitvm_over_gcc)),
    ]);
    body.push(means);

    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            body.iter()
                .chain([&head])
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    // The rule under the heading: as wide as each padded cell, numbers aligned right.
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            if i == 0 {
                "-".repeat(w + 2)
            } else {
                format!("{}:", "-".repeat(w + 1))
            }
        })
        .collect();
    let mut out = line(&head);
    out += &format!("|{}|\n", rule.join("|"));
    for cells in &body {
        out += &line(cells);
    }
    out
}

/// The whole of `bench/results.md`: a heading, how it was measured, the table (times in
/// seconds), what the ratio columns mean, and the geometric mean of baseline / opt.
pub fn markdown(conditions: &Conditions, columns: &[Kind], rows: &[Row]) -> String {
    let mut out = String::from("# jitvm benchmark results\n\n");
    out += &conditions.describe();
    out += "\n\nMedian seconds per run:\n\n";
    out += &table(columns, rows);
    out += "\nopt / baseline is below 1 where the optimizing tier is faster than the baseline \
            one. auto / best forced compares `--tier auto` with the fastest forced tier: \
            above 1 is what tiering up costs. best jitvm / gcc is the fastest jitvm tier \
            against gcc -O2. Lua has no threads, so the Lua peers of `atomics` run its \
            workers one after another.\n";
    if let Some((mean, count)) = baseline_over_opt(rows) {
        out += &format!(
            "\nGeometric mean of baseline / opt over {count} programs: {mean:.2} ({}).\n",
            if mean > 1.0 {
                "the optimizing tier is faster on average"
            } else {
                "the optimizing tier is not faster on average"
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn medians(pairs: &[(Kind, f64)]) -> Medians {
        pairs.iter().copied().collect()
    }

    const B: Kind = Kind::Jitvm(Tier::Baseline);
    const O: Kind = Kind::Jitvm(Tier::Opt);
    const A: Kind = Kind::Jitvm(Tier::Auto);
    const I: Kind = Kind::Jitvm(Tier::Interp);

    #[test]
    fn the_ratios_compare_opt_with_baseline_auto_with_the_best_forced_tier_and_the_best_tier_with_gcc(
    ) {
        let r = ratios(&medians(&[
            (I, 8.0),
            (B, 2.0),
            (O, 1.0),
            (A, 1.5),
            (Kind::Gcc, 0.5),
        ]));
        assert_eq!(r.opt_over_baseline, Some(0.5));
        assert_eq!(r.auto_over_best_forced, Some(1.5));
        assert_eq!(r.best_jitvm_over_gcc, Some(2.0));
    }

    #[test]
    fn auto_counts_as_the_best_jitvm_tier_when_it_is_the_fastest() {
        let r = ratios(&medians(&[(B, 2.0), (O, 3.0), (A, 1.0), (Kind::Gcc, 1.0)]));
        assert_eq!(r.auto_over_best_forced, Some(0.5));
        assert_eq!(r.best_jitvm_over_gcc, Some(1.0));
    }

    #[test]
    fn a_ratio_whose_command_did_not_run_is_absent() {
        let r = ratios(&medians(&[(O, 1.0), (A, 1.0)]));
        assert_eq!(r.opt_over_baseline, None);
        assert_eq!(r.auto_over_best_forced, Some(1.0));
        assert_eq!(r.best_jitvm_over_gcc, None);
    }

    fn row(program: &str, pairs: &[(Kind, f64)]) -> Row {
        Row {
            program: program.into(),
            medians: medians(pairs),
            failed: BTreeSet::new(),
        }
    }

    #[test]
    fn the_mean_of_baseline_over_opt_is_geometric_over_the_programs_that_ran_both() {
        let rows = [
            row("a", &[(B, 4.0), (O, 1.0)]),
            row("b", &[(B, 1.0), (O, 1.0)]),
            row("c", &[(B, 1.0)]),
        ];
        let (mean, count) = baseline_over_opt(&rows).unwrap();
        assert!((mean - 2.0).abs() < 1e-12, "{mean}");
        assert_eq!(count, 2);
    }

    #[test]
    fn the_table_has_a_cell_per_command_the_ratios_and_a_row_of_means() {
        let mut failing = row("p", &[(B, 2.0), (O, 1.0), (Kind::Gcc, 0.25)]);
        failing.failed.insert(A);
        let text = table(&[B, O, A, Kind::Gcc, Kind::LuaJit], &[failing]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let cells = |l: &str| {
            l.split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[0]),
            [
                "program",
                "baseline",
                "opt",
                "auto",
                "gcc -O2",
                "luajit",
                "opt / baseline",
                "auto / best forced",
                "best jitvm / gcc"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            ["p", "2.000", "1.000", "FAIL", "0.250", "-", "0.50", "-", "4.00"]
        );
        assert_eq!(cells(lines[3]), ["geometric mean", "0.50", "-", "4.00"]);
        assert!(
            lines[1].starts_with("|---") && lines[1].ends_with("-:|"),
            "{}",
            lines[1]
        );
        let widths: Vec<usize> = lines.iter().map(|l| l.len()).collect();
        assert!(
            widths.iter().all(|&w| w == widths[0]),
            "the columns line up:\n{text}"
        );
    }

    #[test]
    fn the_measurement_note_says_rounds_medians_and_cores() {
        let c = Conditions {
            rounds: 5,
            cores: 2,
            cpu: None,
            load: None,
            missing: vec![Kind::LuaJit],
        };
        let text = c.describe();
        for part in [
            "5 rounds",
            "median",
            "2 cores",
            "Not installed, so not run: luajit.",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }
}
