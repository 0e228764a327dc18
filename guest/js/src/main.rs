//! `qjs`: the small JavaScript runtime of the embervm guest image.
//!
//! Built on QuickJS-ng (through the `rquickjs` crate, which bundles its C
//! sources), as one static binary. Every program runs as an ES module.
//!
//! # Usage
//!
//! ```text
//! qjs FILE [ARGS...]            run FILE as an ES module
//! qjs -e CODE [ARGS...]         run CODE as an ES module
//! qjs - [ARGS...]               run the ES module read from stdin
//! qjs --call ENTRY FILE [ARGS...]
//!                               call an export of FILE with JSON arguments from stdin
//! qjs --help | --version
//! ```
//!
//! `--` ends the options: `qjs -- -odd-name.js` runs the file `-odd-name.js`.
//!
//! # Modules
//!
//! `import`/`export` work everywhere. Relative (`./x.js`, `../x.js`) and
//! absolute specifiers resolve from the importing file's directory (from the
//! current directory for `-e` and stdin programs); the name is tried as is,
//! then with `.js`, `.mjs`, `/index.js` and `/index.mjs`. A `.json` file
//! imports as its parsed value (default export). Bare specifiers (`"lodash"`,
//! `"node:fs"`) are not supported. `import.meta` has `url`, `filename`,
//! `dirname` and `main`.
//!
//! # Globals
//!
//! On top of the ECMAScript built-ins of QuickJS-ng (including
//! `queueMicrotask` and `performance.now()`):
//!
//! - `console.log`/`info`/`debug`/`dir`/`count`/`time*`/`table` write to
//!   stdout, `console.error`/`warn`/`trace`/`assert` to stderr. Arguments are
//!   formatted like Node's `util.format`: printf-style `%s %d %i %f %j %o %O %c
//!   %%` in a leading string, strings bare at the top level, other values like
//!   `util.inspect` (`{ a: 1, b: 'x' }`, `[ 1, 2, 3 ]`, `Map(1) { 'k' => 1 }`,
//!   nesting cut at depth 2, circular references marked), joined by a space,
//!   newline at the end. `console.group`/`groupEnd` indent.
//! - `print(...)`: same as `console.log`.
//! - `scriptArgs` and `process.argv`: the script name (`FILE` as given,
//!   `[eval]` for `-e`, `[stdin]` for `-`), then `ARGS`. Unlike Node there is
//!   no interpreter path in front.
//! - `process.env` (the environment, as an object), `process.exit(code)`,
//!   `process.exitCode`, `process.stdout.write(str)`,
//!   `process.stderr.write(str)` (strings or `Uint8Array`s),
//!   `process.cwd()`, `process.pid`, `process.platform`, `process.nextTick`.
//! - `readStdin()`: all of stdin as a string (UTF-8, lossy).
//! - `std.loadFile(path)` and `std.writeFile(path, string)`: whole-file read
//!   and write; they throw on error.
//! - `setTimeout`, `setInterval`, `setImmediate` and their `clear*`
//!   (numeric ids).
//!
//! stdout is line-buffered and flushed before the process exits, whatever the
//! way out (end of program, `process.exit`, uncaught error).
//!
//! # Running to completion and errors
//!
//! After the module body, pending jobs (promise reactions, microtasks) and
//! timers run until none is left. The exit status is then
//! `process.exitCode` (0 by default).
//!
//! An uncaught exception, a rejected module evaluation (including a failed
//! top-level `await`), an unhandled promise rejection or an exception thrown
//! by a timer or microtask prints `Uncaught <Name>: <message>` and the stack
//! (when there is one) on stderr and exits with status 1. Syntax errors and
//! failed imports are reported the same way. A top-level `await` that can
//! never settle exits with status 13 after a warning, as in Node.
//!
//! # Call mode
//!
//! `qjs --call ENTRY FILE` reads a JSON array of arguments from stdin (empty
//! stdin means no arguments), imports FILE, and calls its default export
//! (`ENTRY` = `default`) or the named export `ENTRY` with those arguments. A
//! returned promise (or thenable) is awaited, running jobs and timers as
//! needed. On success it prints exactly one line `{"ok":<JSON of the
//! result>}` on stdout (`undefined` becomes `null`) and exits 0; on failure
//! (bad arguments, import error, missing export, thrown exception, rejected
//! promise, result not serialisable to JSON) it prints
//! `{"error":{"name":...,"message":...,"stack":...}}` (`stack` may be `""`)
//! and exits 1. Everything the program writes to stdout (`console.log`,
//! `process.stdout.write`, ...) goes to stderr in this mode, so stdout stays
//! machine-readable. The process ends as soon as the result is known: timers
//! still pending then do not run. `process.exit()` called by the function ends
//! the process at once, with no result line.
//!
//! # Exit status
//!
//! 0 success, 1 uncaught error or failed call, 2 bad command line, 13
//! unsettled top-level `await`, or the value passed to `process.exit`.

mod engine;

use std::path::PathBuf;

use engine::{exit, Program};

const USAGE: &str = "\
usage: qjs FILE [ARGS...]             run FILE as an ES module
       qjs -e CODE [ARGS...]          run CODE as an ES module
       qjs - [ARGS...]                run the ES module read from stdin
       qjs --call ENTRY FILE [ARGS...]
                                      call export ENTRY ('default' for the default export)
                                      of FILE with the JSON array of arguments on stdin;
                                      prints {\"ok\":RESULT} or {\"error\":{...}}
       qjs --help | --version
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run {
        program: Source,
        args: Vec<String>,
    },
    Call {
        entry: String,
        file: PathBuf,
        args: Vec<String>,
    },
    Help,
    Version,
}

/// Where the program of a `Run` comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    File(PathBuf),
    Code(String),
    Stdin,
}

/// Parses the arguments after the program name.
fn parse(args: &[String]) -> Result<Command, String> {
    let mut it = args.iter();
    let first = it.next().ok_or("missing FILE")?;
    let rest = |it: std::slice::Iter<'_, String>| it.cloned().collect::<Vec<_>>();
    match first.as_str() {
        "-h" | "--help" => Ok(Command::Help),
        "-v" | "--version" => Ok(Command::Version),
        "-e" | "--eval" => {
            let code = it.next().ok_or("-e needs CODE")?.clone();
            let mut args = vec!["[eval]".to_owned()];
            args.extend(rest(it));
            Ok(Command::Run {
                program: Source::Code(code),
                args,
            })
        }
        "-" => {
            let mut args = vec!["[stdin]".to_owned()];
            args.extend(rest(it));
            Ok(Command::Run {
                program: Source::Stdin,
                args,
            })
        }
        "--call" => {
            let entry = it.next().ok_or("--call needs ENTRY and FILE")?.clone();
            let file = it.next().ok_or("--call needs ENTRY and FILE")?.clone();
            let mut args = vec![file.clone()];
            args.extend(rest(it));
            Ok(Command::Call {
                entry,
                file: PathBuf::from(file),
                args,
            })
        }
        "--" => {
            let file = it.next().ok_or("missing FILE after --")?.clone();
            let mut args = vec![file.clone()];
            args.extend(rest(it));
            Ok(Command::Run {
                program: Source::File(PathBuf::from(file)),
                args,
            })
        }
        opt if opt.starts_with('-') && opt.len() > 1 => Err(format!("unknown option {opt}")),
        file => {
            let mut args = vec![file.to_owned()];
            args.extend(rest(it));
            Ok(Command::Run {
                program: Source::File(PathBuf::from(file)),
                args,
            })
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let command = match parse(&args) {
        Ok(c) => c,
        Err(message) => {
            eprint!("qjs: {message}\n{USAGE}");
            exit(2)
        }
    };
    match command {
        Command::Help => {
            print!("{USAGE}");
            exit(0)
        }
        Command::Version => {
            println!("qjs (embervm-js {})", env!("CARGO_PKG_VERSION"));
            exit(0)
        }
        Command::Call { entry, file, args } => engine::run_call(&entry, &file, args),
        Command::Run { program, args } => {
            let program = match program {
                Source::File(path) => Program::File(path),
                Source::Code(code) => Program::Source(code.into_bytes()),
                Source::Stdin => {
                    let mut code = Vec::new();
                    if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut code) {
                        eprintln!("qjs: cannot read the program from stdin: {e}");
                        exit(1)
                    }
                    Program::Source(code)
                }
            };
            engine::run_program(program, args)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_file_and_args() {
        assert_eq!(
            parse(&strings(&["a.js", "x", "-y"])),
            Ok(Command::Run {
                program: Source::File("a.js".into()),
                args: strings(&["a.js", "x", "-y"])
            })
        );
    }

    #[test]
    fn parses_eval_stdin_call() {
        assert_eq!(
            parse(&strings(&["-e", "1", "z"])),
            Ok(Command::Run {
                program: Source::Code("1".into()),
                args: strings(&["[eval]", "z"])
            })
        );
        assert_eq!(
            parse(&strings(&["-"])),
            Ok(Command::Run {
                program: Source::Stdin,
                args: strings(&["[stdin]"])
            })
        );
        assert_eq!(
            parse(&strings(&["--call", "default", "m.js"])),
            Ok(Command::Call {
                entry: "default".into(),
                file: "m.js".into(),
                args: strings(&["m.js"])
            })
        );
    }

    #[test]
    fn rejects_bad_command_lines() {
        assert!(parse(&[]).is_err());
        assert!(parse(&strings(&["-e"])).is_err());
        assert!(parse(&strings(&["--call", "f"])).is_err());
        assert!(parse(&strings(&["--bogus"])).is_err());
    }
}
