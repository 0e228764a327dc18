//! The engine behind `qjs`: runtime set-up, native helpers, the file-system
//! module loader, the event loop and the reporting of uncaught errors.
//!
//! Every way out of a run goes through [`exit`], which flushes stdout and
//! stderr and ends the process without tearing the QuickJS runtime down (there
//! is nothing left to free once the program is done).

use std::cell::RefCell;
use std::convert::Infallible;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::context::EvalOptions;
use rquickjs::function::Rest;
use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Evaluated;
use rquickjs::promise::PromiseState;
use rquickjs::runtime::RejectionTracker;
use rquickjs::{
    Array, Coerced, Context, Ctx, Error, FromJs, Function, Module, Object, Persistent, Promise,
    Runtime, TypedArray, Value,
};

/// The JavaScript half of the runtime (console, process, timers, ...).
const PRELUDE: &str = include_str!("prelude.js");

/// Exit status of a program that left a top-level `await` unsettled (as Node).
const EXIT_UNSETTLED: i32 = 13;

/// Flushes stdout and stderr and ends the process with `code`.
pub fn exit(code: i32) -> ! {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    std::process::exit(code)
}

/// What to run.
pub enum Program {
    /// An ES module file.
    File(PathBuf),
    /// ES module source text (from `-e` or stdin); relative imports resolve
    /// from the current directory.
    Source(Vec<u8>),
}

/// How a run reports its outcome.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Normal program: output as is, `Uncaught ...` on stderr on failure.
    Run,
    /// `--call`: stdout carries exactly one JSON line; console output goes to stderr.
    Call,
}

/// Unhandled promise rejections, as `(promise, reason)`, oldest first.
type Rejections = Rc<RefCell<Vec<(Persistent<Value<'static>>, Persistent<Value<'static>>)>>>;

/// Hooks returned by the prelude.
struct Hooks<'js> {
    run_timer: Function<'js>,
    to_promise: Function<'js>,
    process: Object<'js>,
}

/// A failure of the program: a thrown JavaScript value, or an engine error
/// that never became a JavaScript value.
enum Failure<'js> {
    Thrown(Value<'js>),
    Internal(String),
}

impl<'js> Failure<'js> {
    /// Turns an rquickjs error into a failure, taking the pending exception
    /// off the context when there is one.
    fn from_error(ctx: &Ctx<'js>, error: Error) -> Self {
        if error.is_exception() {
            Failure::Thrown(ctx.catch())
        } else {
            Failure::Internal(error.to_string())
        }
    }
}

/// `name`, `message` and `stack` of a failure.
struct ErrorInfo {
    name: String,
    message: String,
    stack: String,
    /// Whether the thrown value was an error object (false: `throw 42`).
    error_like: bool,
}

/// Runs `program` as an ES module; `args` becomes `scriptArgs`/`process.argv`.
pub fn run_program(program: Program, args: Vec<String>) -> ! {
    with_engine(Mode::Run, args, |ctx, hooks, rejections| {
        let (name, source) = match program {
            Program::File(path) => match load_main(&path) {
                Ok(loaded) => loaded,
                Err(message) => {
                    eprintln!("qjs: {message}");
                    exit(1)
                }
            },
            Program::Source(code) => (eval_module_name(), code),
        };
        let promise = match start_module(ctx, &name, source) {
            Ok(promise) => promise,
            Err(failure) => fail(ctx, Mode::Run, failure),
        };
        // Run until there is nothing left to do, stopping at the first
        // rejection of the main module or unhandled rejection (as Node does).
        let checked = run_loop(ctx, hooks, None, || {
            if matches!(promise.state(), PromiseState::Rejected) {
                return Some(Failure::Thrown(rejection_reason(ctx, &promise)));
            }
            first_rejection(ctx, rejections).map(Failure::Thrown)
        });
        if let Err(failure) = checked {
            fail(ctx, Mode::Run, failure);
        }
        if matches!(promise.state(), PromiseState::Pending) {
            eprintln!("Warning: Detected unsettled top-level await in {name}");
            exit(EXIT_UNSETTLED);
        }
        let code = hooks
            .process
            .get::<_, Option<Coerced<i32>>>("exitCode")
            .ok()
            .flatten()
            .map_or(0, |c| c.0);
        exit(code)
    })
}

/// `--call ENTRY FILE`: imports FILE, calls its export ENTRY with the JSON
/// array of arguments read from stdin, and prints `{"ok":...}` or
/// `{"error":{...}}` as one line on stdout.
pub fn run_call(entry: &str, file: &Path, args: Vec<String>) -> ! {
    let mut input = Vec::new();
    if let Err(e) = io::stdin().lock().read_to_end(&mut input) {
        print_call_error(&ErrorInfo {
            name: "Error".into(),
            message: format!("cannot read arguments from stdin: {e}"),
            stack: String::new(),
            error_like: true,
        });
        exit(1);
    }
    with_engine(
        Mode::Call,
        args,
        |ctx, hooks, _rejections| match call_entry(ctx, hooks, entry, file, &input) {
            Ok(json) => {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{{\"ok\":{json}}}");
                let _ = out.flush();
                exit(0)
            }
            Err(failure) => fail(ctx, Mode::Call, failure),
        },
    )
}

/// The body of `--call`; returns the JSON text of the result.
fn call_entry<'js>(
    ctx: &Ctx<'js>,
    hooks: &Hooks<'js>,
    entry: &str,
    file: &Path,
    input: &[u8],
) -> Result<String, Failure<'js>> {
    let text = String::from_utf8_lossy(input);
    let args: Vec<Value<'js>> = if text.trim().is_empty() {
        Vec::new()
    } else {
        let parsed = ctx
            .json_parse(text.as_bytes())
            .map_err(|e| Failure::from_error(ctx, e))?;
        match parsed.into_array() {
            Some(array) => array
                .iter::<Value>()
                .collect::<rquickjs::Result<_>>()
                .map_err(|e| Failure::from_error(ctx, e))?,
            None => {
                return Err(type_error(
                    ctx,
                    "the arguments on stdin must be a JSON array",
                ))
            }
        }
    };

    let (name, source) = load_main(file).map_err(|m| type_error_named(ctx, "Error", &m))?;
    let (module, evaluated) = declare_and_eval(ctx, &name, source)?;
    settle(ctx, hooks, evaluated)??;

    let export: Value = module.get(entry).map_err(|e| Failure::from_error(ctx, e))?;
    let Some(func) = export.as_function() else {
        let what = if export.is_undefined() {
            format!("{name} has no export named '{entry}'")
        } else {
            format!("export '{entry}' of {name} is not a function")
        };
        return Err(type_error(ctx, &what));
    };
    let result: Value = func
        .call((Rest(args),))
        .map_err(|e| Failure::from_error(ctx, e))?;
    let promise: Promise = hooks
        .to_promise
        .call((result,))
        .map_err(|e| Failure::from_error(ctx, e))?;
    let value = settle(ctx, hooks, promise)??;
    let json = ctx
        .json_stringify(value)
        .map_err(|e| Failure::from_error(ctx, e))?;
    match json {
        Some(s) => s.to_string().map_err(|e| Failure::from_error(ctx, e)),
        None => Ok("null".to_owned()),
    }
}

/// Runs the event loop until `promise` settles; the outer error is a failure
/// of the loop itself (an uncaught exception in a timer, or the promise never
/// settling), the inner result is the promise's outcome.
fn settle<'js>(
    ctx: &Ctx<'js>,
    hooks: &Hooks<'js>,
    promise: Promise<'js>,
) -> Result<Result<Value<'js>, Failure<'js>>, Failure<'js>> {
    run_loop(ctx, hooks, Some(&promise), || None)?;
    match promise.state() {
        PromiseState::Pending => Err(type_error_named(
            ctx,
            "Error",
            "the promise never settled (nothing left to run)",
        )),
        PromiseState::Rejected => Ok(Err(Failure::Thrown(rejection_reason(ctx, &promise)))),
        PromiseState::Resolved => Ok(promise
            .result::<Value>()
            .unwrap_or_else(|| Ok(Value::new_undefined(ctx.clone())))
            .map_err(|e| Failure::from_error(ctx, e))),
    }
}

/// Creates the runtime, context and globals, then hands over to `body`,
/// which must end the process.
fn with_engine<F>(mode: Mode, args: Vec<String>, body: F) -> !
where
    F: for<'js> FnOnce(&Ctx<'js>, &Hooks<'js>, &Rejections) -> Infallible,
{
    let runtime = match Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qjs: cannot create the JavaScript runtime: {e}");
            exit(1)
        }
    };
    runtime.set_loader(FsResolver, FsLoader);
    let rejections: Rejections = Rc::default();
    let tracked = rejections.clone();
    let tracker: RejectionTracker = Box::new(move |ctx, promise, reason, handled| {
        let Ok(mut list) = tracked.try_borrow_mut() else {
            return;
        };
        if handled {
            list.retain(|(p, _)| match p.clone().restore(&ctx) {
                Ok(p) => p != promise,
                Err(_) => true,
            });
        } else {
            list.push((
                Persistent::save(&ctx, promise),
                Persistent::save(&ctx, reason),
            ));
        }
    });
    runtime.set_host_promise_rejection_tracker(Some(tracker));
    let context = match Context::full(&runtime) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qjs: cannot create the JavaScript context: {e}");
            exit(1)
        }
    };
    match context.with(|ctx| -> Infallible {
        let hooks = match install_globals(&ctx, mode, args) {
            Ok(h) => h,
            Err(e) => {
                let failure = Failure::from_error(&ctx, e);
                let info = error_info(&ctx, &failure);
                eprintln!(
                    "qjs: cannot set up the globals: {}: {}",
                    info.name, info.message
                );
                exit(1)
            }
        };
        body(&ctx, &hooks, &rejections)
    }) {}
}

/// Declares `source` as the module `name` and starts evaluating it; returns
/// the promise of its evaluation.
fn start_module<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    source: Vec<u8>,
) -> Result<Promise<'js>, Failure<'js>> {
    declare_and_eval(ctx, name, source).map(|(_, p)| p)
}

fn declare_and_eval<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    source: Vec<u8>,
) -> Result<(Module<'js, Evaluated>, Promise<'js>), Failure<'js>> {
    let module =
        Module::declare(ctx.clone(), name, source).map_err(|e| Failure::from_error(ctx, e))?;
    set_import_meta(&module, name, true).map_err(|e| Failure::from_error(ctx, e))?;
    module.eval().map_err(|e| Failure::from_error(ctx, e))
}

/// Drives the job queue and the timers. Returns when `until` has settled, or
/// when there are no jobs and no timers left. `check` runs each time the job
/// queue is empty; a failure it returns ends the loop.
fn run_loop<'js, C>(
    ctx: &Ctx<'js>,
    hooks: &Hooks<'js>,
    until: Option<&Promise<'js>>,
    mut check: C,
) -> Result<(), Failure<'js>>
where
    C: FnMut() -> Option<Failure<'js>>,
{
    loop {
        while ctx.execute_pending_job() {}
        if let Some(failure) = check() {
            return Err(failure);
        }
        if let Some(p) = until {
            if !matches!(p.state(), PromiseState::Pending) {
                return Ok(());
            }
        }
        match hooks.run_timer.call::<_, bool>(()) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(Failure::from_error(ctx, e)),
        }
    }
}

/// The reason of a rejected promise.
fn rejection_reason<'js>(ctx: &Ctx<'js>, promise: &Promise<'js>) -> Value<'js> {
    match promise.result::<Value>() {
        // A rejected promise's `result` throws its reason onto the context.
        Some(Err(_)) => ctx.catch(),
        Some(Ok(v)) => v,
        None => Value::new_undefined(ctx.clone()),
    }
}

/// The reason of the oldest still-unhandled rejection, if any.
fn first_rejection<'js>(ctx: &Ctx<'js>, rejections: &Rejections) -> Option<Value<'js>> {
    let list = rejections.try_borrow().ok()?;
    let (_, reason) = list.first()?;
    reason.clone().restore(ctx).ok()
}

/// Reports `failure` the way `mode` wants and exits with status 1.
fn fail<'js>(ctx: &Ctx<'js>, mode: Mode, failure: Failure<'js>) -> ! {
    let info = error_info(ctx, &failure);
    match mode {
        Mode::Run => {
            let _ = io::stdout().flush();
            let mut err = io::stderr().lock();
            let header = if !info.error_like {
                info.message
            } else if info.message.is_empty() {
                info.name
            } else {
                format!("{}: {}", info.name, info.message)
            };
            let _ = writeln!(err, "Uncaught {header}");
            let stack = info.stack.trim_end();
            if !stack.is_empty() {
                let _ = writeln!(err, "{stack}");
            }
        }
        Mode::Call => print_call_error(&info),
    }
    exit(1)
}

fn print_call_error(info: &ErrorInfo) {
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "{{\"error\":{{\"name\":{},\"message\":{},\"stack\":{}}}}}",
        json_string(&info.name),
        json_string(&info.message),
        json_string(&info.stack)
    );
    let _ = out.flush();
}

/// Name, message and stack of a failure. Error-like objects give their own;
/// any other thrown value becomes an `Error` whose message describes it.
fn error_info<'js>(ctx: &Ctx<'js>, failure: &Failure<'js>) -> ErrorInfo {
    let value = match failure {
        Failure::Internal(message) => {
            return ErrorInfo {
                name: "InternalError".into(),
                message: message.clone(),
                stack: String::new(),
                error_like: true,
            }
        }
        Failure::Thrown(v) => v,
    };
    if let Some(obj) = value.as_object() {
        let name = string_prop(ctx, obj, "name");
        let message = string_prop(ctx, obj, "message");
        if obj.is_error() || (name.is_some() && message.is_some()) {
            return ErrorInfo {
                name: name.unwrap_or_else(|| "Error".into()),
                message: message.unwrap_or_default(),
                stack: string_prop(ctx, obj, "stack")
                    .map(|s| s.trim_end().to_owned())
                    .unwrap_or_default(),
                error_like: true,
            };
        }
    }
    ErrorInfo {
        name: "Error".into(),
        message: describe(ctx, value),
        stack: String::new(),
        error_like: false,
    }
}

/// A property of `obj` as a string, if present and convertible; never leaves
/// an exception pending.
fn string_prop<'js>(ctx: &Ctx<'js>, obj: &Object<'js>, key: &str) -> Option<String> {
    match obj.get::<_, Option<Coerced<String>>>(key) {
        Ok(v) => v.map(|c| c.0),
        Err(_) => {
            let _ = ctx.catch();
            None
        }
    }
}

/// A short description of a thrown non-error value.
fn describe<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> String {
    if let Some(s) = value.as_string() {
        if let Ok(s) = s.to_string() {
            return s;
        }
    }
    if value.is_object() {
        if let Ok(Some(json)) = ctx.json_stringify(value.clone()) {
            if let Ok(s) = json.to_string() {
                return s;
            }
        }
        let _ = ctx.catch();
    }
    match Coerced::<String>::from_js(ctx, value.clone()) {
        Ok(s) => s.0,
        Err(_) => {
            let _ = ctx.catch();
            format!("<{}>", value.type_name())
        }
    }
}

/// A failure carrying a fresh error object of class `TypeError`.
fn type_error<'js>(ctx: &Ctx<'js>, message: &str) -> Failure<'js> {
    type_error_named(ctx, "TypeError", message)
}

/// A failure carrying a fresh error object of the global class `class`.
fn type_error_named<'js>(ctx: &Ctx<'js>, class: &str, message: &str) -> Failure<'js> {
    let made = ctx
        .globals()
        .get::<_, rquickjs::Constructor>(class)
        .and_then(|c| c.construct::<_, Value>((message,)));
    match made {
        Ok(v) => Failure::Thrown(v),
        Err(_) => {
            let _ = ctx.catch();
            Failure::Internal(message.to_owned())
        }
    }
}

/// JSON text of a string.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---- globals -----------------------------------------------------------------

/// Creates the native helpers, runs the prelude with them and returns its hooks.
fn install_globals<'js>(
    ctx: &Ctx<'js>,
    mode: Mode,
    args: Vec<String>,
) -> rquickjs::Result<Hooks<'js>> {
    let native = Object::new(ctx.clone())?;
    let start = Instant::now();
    let redirect_stdout = mode == Mode::Call;

    native.set(
        "write",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, fd: i32, data: Value<'js>| -> rquickjs::Result<()> {
                let bytes = to_bytes(&ctx, data)?;
                // A failed write (EPIPE once the reader is gone, ...) throws,
                // so that a program printing in a loop does not spin forever.
                if fd == 2 || redirect_stdout {
                    let _ = io::stdout().flush();
                    io::stderr().lock().write_all(&bytes)?;
                } else {
                    io::stdout().lock().write_all(&bytes)?;
                }
                Ok(())
            },
        )?,
    )?;
    native.set(
        "exit",
        Function::new(ctx.clone(), |code: i32| -> rquickjs::Result<()> {
            exit(code)
        })?,
    )?;
    native.set(
        "uncaught",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, value: Value<'js>| -> rquickjs::Result<()> {
                fail(&ctx, mode, Failure::Thrown(value))
            },
        )?,
    )?;
    native.set(
        "readStdin",
        Function::new(ctx.clone(), || -> rquickjs::Result<String> {
            let mut buf = Vec::new();
            io::stdin().lock().read_to_end(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        })?,
    )?;
    native.set(
        "loadFile",
        Function::new(ctx.clone(), |path: String| -> rquickjs::Result<String> {
            let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        })?,
    )?;
    native.set(
        "writeFile",
        Function::new(
            ctx.clone(),
            |path: String, data: String| -> rquickjs::Result<()> {
                std::fs::write(&path, data).map_err(|e| io_error(&path, e))
            },
        )?,
    )?;
    native.set(
        "sleep",
        Function::new(ctx.clone(), |ms: f64| {
            if ms.is_finite() && ms > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(ms / 1000.0));
            }
        })?,
    )?;
    native.set(
        "now",
        Function::new(ctx.clone(), move || start.elapsed().as_secs_f64() * 1000.0)?,
    )?;
    native.set(
        "cwd",
        Function::new(ctx.clone(), || -> rquickjs::Result<String> {
            Ok(std::env::current_dir()?.to_string_lossy().into_owned())
        })?,
    )?;
    native.set(
        "promiseState",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, value: Value<'js>| -> rquickjs::Result<Array<'js>> {
                let out = Array::new(ctx.clone())?;
                let Some(promise) = value.into_promise() else {
                    out.set(0, "pending")?;
                    return Ok(out);
                };
                match promise.state() {
                    PromiseState::Pending => out.set(0, "pending")?,
                    PromiseState::Resolved => {
                        out.set(0, "fulfilled")?;
                        if let Some(v) = promise.result::<Value>() {
                            out.set(1, v?)?;
                        }
                    }
                    PromiseState::Rejected => {
                        out.set(0, "rejected")?;
                        out.set(1, rejection_reason(&ctx, &promise))?;
                    }
                }
                Ok(out)
            },
        )?,
    )?;
    native.set("pid", std::process::id())?;

    let env = Object::new(ctx.clone())?;
    for (key, value) in std::env::vars_os() {
        env.set(
            key.to_string_lossy().into_owned(),
            value.to_string_lossy().into_owned(),
        )?;
    }
    native.set("env", env)?;
    native.set("args", args)?;

    let mut options = EvalOptions::default();
    options.filename = Some("qjs:prelude".into());
    let prelude: Function = ctx.eval_with_options(PRELUDE, options)?;
    let hooks: Object = prelude.call((native,))?;
    Ok(Hooks {
        run_timer: hooks.get("runTimer")?,
        to_promise: hooks.get("toPromise")?,
        process: hooks.get("process")?,
    })
}

/// Bytes to write for a `write` call: strings as UTF-8, `Uint8Array`s as is,
/// anything else converted to a string.
fn to_bytes<'js>(ctx: &Ctx<'js>, data: Value<'js>) -> rquickjs::Result<Vec<u8>> {
    if let Some(s) = data.as_string() {
        return Ok(s.to_string()?.into_bytes());
    }
    if let Ok(array) = TypedArray::<u8>::from_value(data.clone()) {
        // Element by element keeps this free of `unsafe`; writes are small.
        return (0..array.len())
            .map(|i| array.get::<_, u8>(i as u32))
            .collect();
    }
    Ok(Coerced::<String>::from_js(ctx, data)?.0.into_bytes())
}

fn io_error(path: &str, e: io::Error) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{path}: {e}")))
}

// ---- modules -----------------------------------------------------------------

/// Module name used for `-e` and stdin programs: a file name in the current
/// directory, so that relative imports resolve from there.
fn eval_module_name() -> String {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    cwd.join("[eval]").to_string_lossy().into_owned()
}

/// Reads the main module; returns its module name (absolute, canonical path)
/// and source.
fn load_main(path: &Path) -> Result<(String, Vec<u8>), String> {
    let source = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let full = std::fs::canonicalize(path).unwrap_or_else(|_| absolute(path));
    let name = full
        .to_str()
        .ok_or_else(|| format!("{}: path is not valid UTF-8", path.display()))?
        .to_owned();
    Ok((name, source))
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        normalize(&cwd.join(path))
    }
}

/// Lexically removes `.` and `..` components.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Sets `import.meta.url`, `filename`, `dirname` and `main` of a file module.
fn set_import_meta<T>(module: &Module<'_, T>, name: &str, main: bool) -> rquickjs::Result<()> {
    let meta = module.meta()?;
    let path = Path::new(name);
    if path.is_absolute() && path.file_name().is_some_and(|f| f != "[eval]") {
        meta.set("url", format!("file://{name}"))?;
        meta.set("filename", name)?;
        if let Some(dir) = path.parent() {
            meta.set("dirname", dir.to_string_lossy().into_owned())?;
        }
    }
    meta.set("main", main)?;
    Ok(())
}

/// Resolves relative (`./`, `../`) and absolute specifiers against the
/// importing module's path, trying the name as is, then with `.js`, `.mjs`
/// and `/index.js`. Bare specifiers (packages) are not supported.
struct FsResolver;

impl Resolver for FsResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        let spec = name.strip_prefix("file://").unwrap_or(name);
        let relative =
            spec == "." || spec == ".." || spec.starts_with("./") || spec.starts_with("../");
        let target = if Path::new(spec).is_absolute() {
            normalize(Path::new(spec))
        } else if relative {
            let dir = Path::new(base).parent().unwrap_or_else(|| Path::new("/"));
            normalize(&absolute(dir).join(spec))
        } else {
            return Err(Error::new_resolving_message(
                base,
                name,
                "only relative ('./x.js') and absolute module paths are supported",
            ));
        };
        let candidates = [
            target.clone(),
            with_suffix(&target, ".js"),
            with_suffix(&target, ".mjs"),
            target.join("index.js"),
            target.join("index.mjs"),
        ];
        let found = candidates
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| Error::new_resolving_message(base, name, "cannot find module"))?;
        let found = std::fs::canonicalize(&found).unwrap_or(found);
        found
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::new_resolving_message(base, name, "path is not valid UTF-8"))
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// Loads a resolved module file; `.json` files become a module whose default
/// export is the parsed JSON.
struct FsLoader;

impl Loader for FsLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js>> {
        let mut source = std::fs::read(name).map_err(|e| io_error(name, e))?;
        if name.ends_with(".json") {
            let mut wrapped = b"export default ".to_vec();
            wrapped.append(&mut source);
            wrapped.extend_from_slice(b";\n");
            source = wrapped;
        }
        let module = Module::declare(ctx.clone(), name, source)?;
        set_import_meta(&module, name, false)?;
        Ok(module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_removes_dots() {
        assert_eq!(
            normalize(Path::new("/a/./b/../c.js")),
            PathBuf::from("/a/c.js")
        );
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
    }

    #[test]
    fn json_string_escapes() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
