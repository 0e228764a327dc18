//! `embervm run` and `embervm exec`: code or a command in a fresh microVM.
//!
//! Both boot a [`Sandbox`], run one thing with stdout and stderr streamed to
//! the terminal as they arrive, and exit with the guest's status: the exit
//! code, 128 + signal for a signal, 124 after `--timeout` (as `timeout(1)`).
//! When stdin is not a terminal it is read to its end and handed to the
//! command. Failures of embervm itself exit 125 (as `timeout(1)` does for
//! its own), a program that is not found 127, one that cannot be run 126.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser};
use embervm_core::sandbox::{ErrorKind, Stream};
use embervm_core::{Command, Language, Sandbox, SandboxConfig, SandboxError};

/// Exit status when embervm itself fails.
const EXIT_INTERNAL: u8 = 125;

/// Options shared by `run` and `exec`.
#[derive(Debug, Args)]
struct VmOpts {
    /// Guest memory: MiB, or with a unit (512M, 1G)
    #[arg(long, default_value = "256", value_parser = parse_memory)]
    memory: u32,
    /// Number of vCPUs
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Kill the command after this many seconds (exit status 124)
    #[arg(long, value_parser = parse_seconds)]
    timeout: Option<Duration>,
    /// Set an environment variable in the guest (repeatable)
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory in the guest
    #[arg(long)]
    cwd: Option<String>,
    /// Guest image directory (vmlinux + initramfs.cpio.gz) [default: `make guest`'s]
    #[arg(long)]
    image: Option<PathBuf>,
    /// Copy the guest console to stderr
    #[arg(long)]
    console: bool,
    /// Boot the guest instead of restoring the cached template of this
    /// shape (the first run of a shape boots and saves the template)
    #[arg(long)]
    cold_boot: bool,
    /// Start from a snapshot directory saved by `Sandbox::snapshot`
    /// (memory and vCPUs come from the snapshot)
    #[arg(long, value_name = "DIR", conflicts_with = "cold_boot")]
    from_snapshot: Option<PathBuf>,
}

/// `embervm run`: run code in a microVM.
#[derive(Debug, Parser)]
#[command(
    name = "embervm run",
    about = "Run code (python, javascript or shell) in a fresh microVM",
    after_help = "Exit status: the program's; 128+N when killed by signal N; 124 on timeout; \
                  125 when embervm fails."
)]
struct RunCli {
    /// Language: python, javascript (js) or shell (sh); default: from FILE's extension
    #[arg(long, short = 'l')]
    language: Option<String>,
    /// The code to run (instead of FILE)
    #[arg(short = 'c', value_name = "CODE", conflicts_with = "file")]
    code: Option<String>,
    /// A file of code (.py, .js/.mjs, .sh)
    file: Option<PathBuf>,
    /// Arguments for the program
    #[arg(last = true)]
    args: Vec<String>,
    #[command(flatten)]
    opts: VmOpts,
}

/// `embervm exec`: run a command in a microVM.
#[derive(Debug, Parser)]
#[command(
    name = "embervm exec",
    about = "Run a command in a fresh microVM",
    after_help = "Exit status: the command's; 128+N when killed by signal N; 124 on timeout; \
                  125 when embervm fails; 126/127 when it cannot be run / is not found."
)]
struct ExecCli {
    #[command(flatten)]
    opts: VmOpts,
    /// The command and its arguments (after `--`)
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    argv: Vec<String>,
}

fn parse_memory(s: &str) -> Result<u32, String> {
    embervm_core::memory::parse_memory_size(s).map_err(|e| e.to_string())
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}': give seconds, e.g. 5 or 0.5"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("'{s}': give seconds above 0"))
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}': use KEY=VALUE")),
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("embervm: {msg}");
    ExitCode::from(EXIT_INTERNAL)
}

/// `embervm run ARGS`.
pub fn run_main(args: &[String]) -> ExitCode {
    let cli = match RunCli::try_parse_from(
        std::iter::once("embervm run".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(c) => c,
        Err(e) => return clap_exit(e),
    };
    let (code, default_lang) = match (&cli.code, &cli.file) {
        (Some(c), _) => (c.clone(), None),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(text) => (
                text,
                f.extension()
                    .and_then(|e| e.to_str())
                    .and_then(Language::from_extension),
            ),
            Err(e) => return fail(format_args!("cannot read {}: {e}", f.display())),
        },
        (None, None) => {
            eprintln!("embervm run: give code with -c CODE or a FILE (see --help)");
            return ExitCode::from(2);
        }
    };
    let lang = match (&cli.language, default_lang) {
        (Some(name), _) => match Language::from_name(name) {
            Some(l) => l,
            None => {
                eprintln!(
                    "embervm run: unknown language '{name}': use python, javascript or shell"
                );
                return ExitCode::from(2);
            }
        },
        (None, Some(l)) => l,
        (None, None) => {
            eprintln!(
                "embervm run: give --language (python, javascript, shell); it cannot be told from {}",
                cli.file.as_ref().map_or("-c".into(), |f| f.display().to_string())
            );
            return ExitCode::from(2);
        }
    };
    let mut opts = command_opts(&cli.opts);
    opts.argv = cli.args.clone();
    let sandbox = match boot(&cli.opts) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cmd = match sandbox.prepare_run(&code, lang, &opts) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    execute(&sandbox, cmd)
}

/// `embervm exec ARGS`.
pub fn exec_main(args: &[String]) -> ExitCode {
    let cli = match ExecCli::try_parse_from(
        std::iter::once("embervm exec".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(c) => c,
        Err(e) => return clap_exit(e),
    };
    let mut cmd = command_opts(&cli.opts);
    cmd.argv = cli.argv.clone();
    let sandbox = match boot(&cli.opts) {
        Ok(s) => s,
        Err(code) => return code,
    };
    execute(&sandbox, cmd)
}

fn clap_exit(e: clap::Error) -> ExitCode {
    let code = if e.use_stderr() { 2 } else { 0 };
    let _ = e.print();
    ExitCode::from(code)
}

fn command_opts(o: &VmOpts) -> Command {
    Command {
        env: o.env.clone(),
        cwd: o.cwd.clone(),
        timeout: o.timeout,
        ..Command::default()
    }
}

fn boot(o: &VmOpts) -> Result<Sandbox, ExitCode> {
    let mut config = match &o.image {
        Some(dir) => SandboxConfig::from_image_dir(dir),
        None => SandboxConfig::default(),
    };
    config.memory_mib = o.memory;
    config.vcpus = o.vcpus;
    config.echo_console = o.console;
    config.use_template = !o.cold_boot;
    match &o.from_snapshot {
        Some(dir) => Sandbox::from_snapshot(dir, config).map_err(fail),
        None => Sandbox::new(config).map_err(fail),
    }
}

/// Run `cmd` with the CLI's stdin, stream its output, and turn its end into
/// an exit status.
fn execute(sandbox: &Sandbox, mut cmd: Command) -> ExitCode {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut buf = Vec::new();
        if let Err(e) = stdin.lock().read_to_end(&mut buf) {
            return fail(format_args!("reading stdin: {e}"));
        }
        cmd.stdin = Some(buf);
    }
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let mut write_failed = false;
    let result = sandbox.exec_streaming(&cmd, None, &mut |stream, data| {
        let w: &mut dyn Write = match stream {
            Stream::Stdout => &mut out,
            Stream::Stderr => &mut err,
        };
        // A closed terminal or pipe must not stop the guest's command; the
        // rest of its output is dropped.
        if !write_failed && (w.write_all(data).is_err() || w.flush().is_err()) {
            write_failed = true;
        }
    });
    drop((out, err));
    match result {
        Ok(o) => {
            if o.timed_out {
                eprintln!("embervm: timed out after {:.1} s", o.wall.as_secs_f64());
            } else if o.oom_killed {
                eprintln!("embervm: the command ran out of memory (OOM-killed)");
            }
            if o.truncated {
                eprintln!("embervm: output truncated");
            }
            ExitCode::from(u8::try_from(o.shell_status()).unwrap_or(EXIT_INTERNAL))
        }
        Err(e) => {
            let status = match &e {
                SandboxError::Agent {
                    kind: ErrorKind::NotFound,
                    ..
                } => 127,
                SandboxError::Agent {
                    kind: ErrorKind::PermissionDenied,
                    ..
                } => 126,
                SandboxError::Unresponsive { .. } => 124,
                _ => EXIT_INTERNAL,
            };
            eprintln!("embervm: {e}");
            ExitCode::from(status)
        }
    }
}
