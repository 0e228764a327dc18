//! Runs the built `qjs` binary end to end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "embervm-js-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs qjs with `args` and `stdin`, in `cwd` (the system temp dir if none).
fn qjs_in(cwd: Option<&Path>, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qjs"));
    cmd.args(args)
        .current_dir(cwd.map_or_else(std::env::temp_dir, Path::to_path_buf))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn qjs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn qjs(args: &[&str], stdin: &str) -> Output {
    qjs_in(None, args, stdin)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

#[test]
fn hello_world() {
    let out = qjs(&["-e", "console.log('hello world')"], "");
    assert_eq!(stdout(&out), "hello world\n");
    assert_eq!(stderr(&out), "");
    assert_eq!(code(&out), 0);

    let dir = Scratch::new();
    let file = dir.write("hello.js", "console.log('hello', 'from', 'a file');\n");
    let out = qjs(&[file.to_str().unwrap()], "");
    assert_eq!(stdout(&out), "hello from a file\n");
    assert_eq!(code(&out), 0);
}

#[test]
fn program_from_stdin() {
    let out = qjs(&["-", "x"], "console.log(scriptArgs.join(','));");
    assert_eq!(stdout(&out), "[stdin],x\n");
    assert_eq!(code(&out), 0);
}

#[test]
fn imports_sibling_module_relative_to_the_file() {
    let dir = Scratch::new();
    dir.write(
        "app/lib/math.js",
        "export const add = (a, b) => a + b;\nexport default 'math';\n",
    );
    dir.write("app/lib/data.json", "{\"answer\": 42}\n");
    dir.write(
        "app/util.js",
        "import name, { add } from './lib/math.js';\nexport const describe = () => `${name}:${add(2, 3)}`;\n",
    );
    let main = dir.write(
        "app/main.js",
        "import { describe } from './util.js';\nimport data from './lib/data.json';\nimport { add } from './lib/math';\n\
         console.log(describe(), data.answer, add(1, 1), import.meta.main);\n",
    );
    // Run from an unrelated directory: imports resolve from the file's directory.
    let out = qjs_in(Some(dir.path()), &[main.to_str().unwrap()], "");
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), "math:5 42 2 true\n");
    assert_eq!(code(&out), 0);

    // Relative import from -e resolves from the current directory.
    let out = qjs_in(
        Some(&dir.path().join("app")),
        &[
            "-e",
            "import { add } from './lib/math.js'; console.log(add(20, 22));",
        ],
        "",
    );
    assert_eq!(stdout(&out), "42\n");
    assert_eq!(code(&out), 0);
}

#[test]
fn missing_import_is_an_uncaught_error() {
    let out = qjs(&["-e", "import './does-not-exist.js';"], "");
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).starts_with("Uncaught "), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does-not-exist.js"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn script_args_and_process_argv() {
    let dir = Scratch::new();
    let file = dir.write(
        "args.js",
        "console.log(JSON.stringify(scriptArgs));\nconsole.log(JSON.stringify(process.argv));\n",
    );
    let path = file.to_str().unwrap();
    let out = qjs(&[path, "one", "two words", "--flag"], "");
    let expected = format!("[\"{path}\",\"one\",\"two words\",\"--flag\"]");
    assert_eq!(stdout(&out), format!("{expected}\n{expected}\n"));

    let out = qjs(&["-e", "console.log(scriptArgs.slice(1))", "a", "b"], "");
    assert_eq!(stdout(&out), "[ 'a', 'b' ]\n");
}

#[test]
fn process_exit_code_and_flushes_output() {
    let out = qjs(
        &["-e", "process.stdout.write('partial'); console.log(' line'); process.exit(3); console.log('not reached')"],
        "",
    );
    assert_eq!(stdout(&out), "partial line\n");
    assert_eq!(code(&out), 3);

    let out = qjs(
        &["-e", "process.stdout.write('no newline'); process.exit(0)"],
        "",
    );
    assert_eq!(stdout(&out), "no newline");
    assert_eq!(code(&out), 0);

    let out = qjs(
        &[
            "-e",
            "process.exitCode = 7; setTimeout(() => console.log('ran'), 1)",
        ],
        "",
    );
    assert_eq!(stdout(&out), "ran\n");
    assert_eq!(code(&out), 7);
}

#[test]
fn uncaught_throw_exits_1_with_message() {
    let out = qjs(
        &[
            "-e",
            "console.log('before');\nfunction f() { throw new TypeError('bad thing'); }\nf();",
        ],
        "",
    );
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "before\n");
    let err = stderr(&out);
    assert!(err.starts_with("Uncaught TypeError: bad thing\n"), "{err}");
    assert!(err.contains("at f"), "stack expected: {err}");

    let out = qjs(&["-e", "throw 42"], "");
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out), "Uncaught 42\n");
}

#[test]
fn rejected_top_level_await_and_unhandled_rejection_exit_1() {
    let out = qjs(&["-e", "await Promise.reject(new RangeError('nope'))"], "");
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).starts_with("Uncaught RangeError: nope"),
        "{}",
        stderr(&out)
    );

    let out = qjs(
        &[
            "-e",
            "Promise.reject(new Error('lost')); setTimeout(() => console.log('late'), 50)",
        ],
        "",
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).starts_with("Uncaught Error: lost"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");

    let out = qjs(
        &["-e", "const p = Promise.reject(new Error('x')); p.catch((e) => console.log('handled', e.message))"],
        "",
    );
    assert_eq!(stdout(&out), "handled x\n");
    assert_eq!(code(&out), 0);

    let out = qjs(
        &["-e", "setTimeout(() => { throw new Error('in timer') }, 1)"],
        "",
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).starts_with("Uncaught Error: in timer"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn syntax_error_exits_1() {
    let out = qjs(&["-e", "let x = ;"], "");
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).starts_with("Uncaught SyntaxError: "),
        "{}",
        stderr(&out)
    );

    let dir = Scratch::new();
    let file = dir.write("bad.js", "console.log('never');\nfunction (\n");
    let out = qjs(&[file.to_str().unwrap()], "");
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("SyntaxError"), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.js"), "{}", stderr(&out));
}

#[test]
fn async_await_and_promise_ordering() {
    let program = r#"
const log = [];
log.push('sync1');
setTimeout(() => log.push('timeout'), 0);
Promise.resolve().then(() => log.push('micro1')).then(() => log.push('micro2'));
queueMicrotask(() => log.push('queued'));
async function work() {
  log.push('work-start');
  await null;
  log.push('work-after-await');
  await new Promise((resolve) => setTimeout(resolve, 10));
  log.push('work-after-sleep');
  return 'done';
}
const result = work();
log.push('sync2');
console.log(await result);
console.log(log.join(' '));
"#;
    let out = qjs(&["-e", program], "");
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        "done\nsync1 work-start sync2 micro1 queued work-after-await micro2 timeout work-after-sleep\n"
    );
    assert_eq!(code(&out), 0);

    // Jobs still pending after the module body run to completion.
    let out = qjs(
        &["-e", "(async () => { for (let i = 0; i < 3; i++) { await new Promise((r) => setTimeout(r, 1)); console.log(i); } })()"],
        "",
    );
    assert_eq!(stdout(&out), "0\n1\n2\n");
    assert_eq!(code(&out), 0);
}

#[test]
fn read_stdin_returns_everything() {
    let out = qjs(
        &["-e", "const s = readStdin(); console.log(JSON.stringify(s)); console.log(s.split('\\n').length)"],
        "line one\nline two\n",
    );
    assert_eq!(stdout(&out), "\"line one\\nline two\\n\"\n3\n");
    assert_eq!(code(&out), 0);
}

#[test]
fn console_formatting_and_streams() {
    let program = r#"
console.log('str', 1, 1.5, -0, true, null, undefined, 10n);
console.log(['a', 1, [2, { b: null }]], { x: 1, 'y-z': 'w', nested: { deep: { deeper: { deepest: 1 } } } });
console.log({}, [], new Map([['k', 1]]), new Set([1]));
console.log('%s is %d', 'answer', 42, 'extra');
const circular = { name: 'c' }; circular.self = circular;
console.log(circular);
console.info('info'); console.debug('debug');
console.error('to', 'stderr'); console.warn({ w: 1 });
"#;
    let out = qjs(&["-e", program], "");
    assert_eq!(
        stdout(&out),
        "str 1 1.5 -0 true null undefined 10n\n\
         [ 'a', 1, [ 2, { b: null } ] ] { x: 1, 'y-z': 'w', nested: { deep: { deeper: [Object] } } }\n\
         {} [] Map(1) { 'k' => 1 } Set(1) { 1 }\n\
         answer is 42 extra\n\
         <ref *1> { name: 'c', self: [Circular *1] }\n\
         info\ndebug\n"
    );
    assert_eq!(stderr(&out), "to stderr\n{ w: 1 }\n");
}

#[test]
fn process_env_and_std_files() {
    let dir = Scratch::new();
    let path = dir.path().join("out.txt");
    let program = format!(
        "console.log(process.env.EMBERVM_JS_TEST); std.writeFile({p:?}, 'written'); console.log(std.loadFile({p:?}));",
        p = path.to_str().unwrap()
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qjs"));
    let out = cmd
        .args(["-e", &program])
        .env("EMBERVM_JS_TEST", "from-env")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "from-env\nwritten\n");
    assert_eq!(code(&out), 0);
}

const CALLEE: &str = r#"
console.log('loading module');
export default function (a, b) {
  console.log('called with', a, b);
  return { sum: a + b, args: [a, b] };
}
export function greet(person) { return `hello ${person.name}`; }
export async function slowDouble(x) {
  await new Promise((resolve) => setTimeout(resolve, 5));
  return x * 2;
}
export function fails(message) { throw new RangeError(message); }
export async function rejects() { await null; throw new Error('async failure'); }
export function nothing() {}
export const notAFunction = 1;
"#;

/// Parses the single JSON line qjs printed in call mode.
fn call(dir: &Scratch, entry: &str, args: &str) -> (i32, String, String) {
    let file = dir.write("callee.js", CALLEE);
    let out = qjs(&["--call", entry, file.to_str().unwrap()], args);
    let text = stdout(&out);
    assert_eq!(
        text.lines().count(),
        1,
        "exactly one line on stdout: {text:?}"
    );
    assert!(text.ends_with('\n'));
    (code(&out), text.trim_end().to_owned(), stderr(&out))
}

#[test]
fn call_default_and_named_exports() {
    let dir = Scratch::new();
    let (status, out, err) = call(&dir, "default", "[1, 2]");
    assert_eq!(out, r#"{"ok":{"sum":3,"args":[1,2]}}"#);
    assert_eq!(status, 0);
    // console.log goes to stderr in call mode.
    assert_eq!(err, "loading module\ncalled with 1 2\n");

    let (status, out, _) = call(&dir, "greet", r#"[{"name": "ember"}]"#);
    assert_eq!(out, r#"{"ok":"hello ember"}"#);
    assert_eq!(status, 0);

    let (status, out, _) = call(&dir, "slowDouble", "[21]");
    assert_eq!(out, r#"{"ok":42}"#);
    assert_eq!(status, 0);

    let (status, out, _) = call(&dir, "nothing", "");
    assert_eq!(out, r#"{"ok":null}"#);
    assert_eq!(status, 0);
}

#[test]
fn call_with_throwing_function() {
    let dir = Scratch::new();
    let (status, out, _) = call(&dir, "fails", r#"["out of range"]"#);
    assert_eq!(status, 1);
    assert!(
        out.starts_with(r#"{"error":{"name":"RangeError","message":"out of range","stack":""#),
        "{out}"
    );
    assert!(out.contains("at fails"), "{out}");

    let (status, out, _) = call(&dir, "rejects", "[]");
    assert_eq!(status, 1);
    assert!(
        out.starts_with(r#"{"error":{"name":"Error","message":"async failure""#),
        "{out}"
    );

    let (status, out, _) = call(&dir, "notAFunction", "[]");
    assert_eq!(status, 1);
    assert!(out.contains(r#""name":"TypeError""#), "{out}");

    let (status, out, _) = call(&dir, "missing", "[]");
    assert_eq!(status, 1);
    assert!(out.contains("no export named 'missing'"), "{out}");

    let (status, out, _) = call(&dir, "default", r#"{"not": "an array"}"#);
    assert_eq!(status, 1);
    assert!(out.contains("must be a JSON array"), "{out}");
}

#[test]
fn bad_command_line_exits_2() {
    let out = qjs(&[], "");
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("usage:"));
    let out = qjs(&["--call", "default"], "");
    assert_eq!(code(&out), 2);
}
