//! What runs a benchmark: each jitvm tier, and each peer (gcc -O2, LuaJIT, Lua 5.4).
//!
//! `Kind` is both a command's identity and a column of the report, in the report's order:
//! jitvm's tiers from slowest to the automatic one, then the peers.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::programs::Program;

/// A jitvm tier, as `jitvm run --tier` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Tier {
    Interp,
    Baseline,
    Opt,
    Auto,
}

impl Tier {
    /// Every tier, in the report's order.
    pub const ALL: [Tier; 4] = [Tier::Interp, Tier::Baseline, Tier::Opt, Tier::Auto];

    /// The name `--tier` takes.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Interp => "interp",
            Tier::Baseline => "baseline",
            Tier::Opt => "opt",
            Tier::Auto => "auto",
        }
    }

    /// Whether this tier is one that `--tier` forces for the whole run (all but `auto`).
    pub fn is_forced(self) -> bool {
        self != Tier::Auto
    }
}

/// As `--tier` spells it (clap shows the default `--tiers` this way).
impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who runs the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Jitvm(Tier),
    Gcc,
    LuaJit,
    Lua54,
}

impl Kind {
    /// Every peer, in the report's order.
    pub const PEERS: [Kind; 3] = [Kind::Gcc, Kind::LuaJit, Kind::Lua54];

    /// The column heading and the name in progress lines and the chart's legend.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Jitvm(tier) => tier.name(),
            Kind::Gcc => "gcc -O2",
            Kind::LuaJit => "luajit",
            Kind::Lua54 => "lua5.4",
        }
    }

    /// The executable a peer needs on PATH (gcc to compile; the Luas to run).
    pub fn tool(self) -> Option<&'static str> {
        match self {
            Kind::Jitvm(_) => None,
            Kind::Gcc => Some("gcc"),
            Kind::LuaJit => Some("luajit"),
            Kind::Lua54 => Some("lua5.4"),
        }
    }
}

/// One command line that runs one program.
#[derive(Clone, Debug)]
pub struct Command {
    pub kind: Kind,
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl Command {
    /// The command line as a shell would show it, with paths relative to `root` where they
    /// lie under it, for messages.
    pub fn display(&self, root: &Path) -> String {
        let show = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
        std::iter::once(show(&self.program))
            .chain(self.args.iter().map(|a| show(Path::new(a))))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Where the runners are: the jitvm binary, and each peer that is installed (gcc's entry
/// is the directory its compiled programs go to; a Lua's is its executable).
#[derive(Clone, Debug)]
pub struct Runners {
    pub jitvm: PathBuf,
    pub tiers: Vec<Tier>,
    pub gcc_out: Option<PathBuf>,
    pub luajit: Option<PathBuf>,
    pub lua54: Option<PathBuf>,
}

/// The commands that run `program`, in the report's order: the chosen tiers, then the
/// installed peers.
pub fn commands_for(program: &Program, runners: &Runners) -> Vec<Command> {
    let mut commands: Vec<Command> = runners
        .tiers
        .iter()
        .map(|&tier| Command {
            kind: Kind::Jitvm(tier),
            program: runners.jitvm.clone(),
            args: vec![
                "run".into(),
                "--tier".into(),
                tier.name().into(),
                program.bc.clone().into(),
            ],
        })
        .collect();
    if let Some(dir) = &runners.gcc_out {
        commands.push(Command {
            kind: Kind::Gcc,
            program: dir.join(&program.name),
            args: Vec::new(),
        });
    }
    for (kind, lua) in [
        (Kind::LuaJit, &runners.luajit),
        (Kind::Lua54, &runners.lua54),
    ] {
        if let Some(lua) = lua {
            commands.push(Command {
                kind,
                program: lua.clone(),
                args: vec![program.lua.clone().into()],
            });
        }
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_orders_tiers_slowest_first_then_the_peers() {
        let mut kinds = vec![
            Kind::Lua54,
            Kind::Gcc,
            Kind::Jitvm(Tier::Auto),
            Kind::LuaJit,
        ];
        kinds.extend(Tier::ALL.iter().rev().map(|&t| Kind::Jitvm(t)));
        kinds.sort();
        kinds.dedup();
        let labels: Vec<&str> = kinds.iter().map(|k| k.label()).collect();
        assert_eq!(
            labels,
            ["interp", "baseline", "opt", "auto", "gcc -O2", "luajit", "lua5.4"]
        );
    }

    #[test]
    fn a_peer_that_is_not_installed_gets_no_command() {
        let program = Program {
            name: "fib".into(),
            bc: "/b/fib.bc".into(),
            c: "/b/fib.c".into(),
            lua: "/b/fib.lua".into(),
            what: String::new(),
            expected: "1\n".into(),
        };
        let runners = Runners {
            jitvm: "/t/jitvm".into(),
            tiers: vec![Tier::Opt],
            gcc_out: Some("/t/peers".into()),
            luajit: None,
            lua54: Some("/usr/bin/lua5.4".into()),
        };
        let commands = commands_for(&program, &runners);
        let shown: Vec<String> = commands
            .iter()
            .map(|c| c.display(Path::new("/b")))
            .collect();
        assert_eq!(
            shown,
            [
                "/t/jitvm run --tier opt fib.bc",
                "/t/peers/fib",
                "/usr/bin/lua5.4 fib.lua"
            ]
        );
    }
}
