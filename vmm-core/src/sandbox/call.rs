//! Calling a function in user code with JSON arguments.
//!
//! Both languages end in the same contract: the runner reads a JSON array of
//! arguments on stdin, calls the function, and prints exactly one line on
//! stdout, `{"ok": <result>}` or `{"error": {"name", "message", "stack"}}`;
//! everything the user's code prints goes to stderr. JavaScript uses the
//! guest runtime's own `qjs --call ENTRY FILE`; Python uses
//! [`PYTHON_RUNNER`], a small script that imports the code as a module
//! (awaiting a coroutine result). [`parse_result`] checks the line the guest
//! printed: a result is accepted only in exactly that shape.

use serde_json::Value;

use super::command::Output;
use super::error::CallError;

/// The Python runner: `python3 RUNNER CODE_FILE ENTRY`, arguments on stdin.
pub const PYTHON_RUNNER: &str = r#"import sys, json, traceback
def _embervm_call():
    out = sys.stdout
    sys.stdout = sys.stderr
    try:
        path, entry = sys.argv[1], sys.argv[2]
        data = sys.stdin.read()
        args = json.loads(data) if data.strip() else []
        if not isinstance(args, list):
            raise TypeError("the arguments must be a JSON array")
        import importlib.util
        spec = importlib.util.spec_from_file_location("user_code", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["user_code"] = mod
        spec.loader.exec_module(mod)
        fn = getattr(mod, entry, None)
        if fn is None:
            raise AttributeError("the code defines no function %r" % entry)
        if not callable(fn):
            raise TypeError("%r is not callable" % entry)
        result = fn(*args)
        import inspect
        if inspect.iscoroutine(result):
            import asyncio
            result = asyncio.run(result)
        line = json.dumps({"ok": result}, allow_nan=False)
    except Exception as e:
        line = json.dumps({"error": {"name": type(e).__name__, "message": str(e),
                                     "stack": traceback.format_exc()}})
    out.write(line + "\n")
    out.flush()
_embervm_call()
"#;

/// The arguments as the JSON array the runners read: an array is the
/// positional arguments, any other value is the one argument.
pub fn args_array(args: &Value) -> Vec<u8> {
    let arr = match args {
        Value::Array(_) => args.clone(),
        other => Value::Array(vec![other.clone()]),
    };
    // Serializing a Value cannot fail (keys are strings).
    serde_json::to_vec(&arr).unwrap_or_else(|_| b"[]".to_vec())
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Bytes of stderr kept in a [`CallError::NoResult`].
const STDERR_TAIL: usize = 4096;

fn stderr_tail(out: &Output) -> String {
    let s = &out.stderr;
    let from = s.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&s[from..]).trim_end().to_string()
}

/// Turn the runner's output into the function's value or a [`CallError`].
pub fn parse_result(out: &Output) -> Result<Value, CallError> {
    let line = out
        .stdout
        .split(|&b| b == b'\n')
        .rev()
        .find(|l| !l.iter().all(u8::is_ascii_whitespace));
    let Some(line) = line else {
        let status = if out.timed_out {
            "timed out".to_string()
        } else if out.oom_killed {
            "killed by the OOM killer".to_string()
        } else if let Some(sig) = out.signal {
            format!("killed by signal {sig}")
        } else {
            format!("exit code {}", out.exit_code.unwrap_or(-1))
        };
        return Err(CallError::NoResult {
            status,
            timed_out: out.timed_out,
            oom_killed: out.oom_killed,
            stderr: stderr_tail(out),
        });
    };
    let v: Value = serde_json::from_slice(line).map_err(|e| {
        let shown: String = String::from_utf8_lossy(line).chars().take(200).collect();
        CallError::BadResult(format!("{e}: {shown}"))
    })?;
    let Value::Object(mut map) = v else {
        return Err(CallError::BadResult(
            "the result line is not an object".into(),
        ));
    };
    if map.len() != 1 {
        return Err(CallError::BadResult(
            "the result line must hold exactly one of \"ok\" or \"error\"".into(),
        ));
    }
    if let Some(ok) = map.remove("ok") {
        return Ok(ok);
    }
    match map.remove("error") {
        Some(Value::Object(e)) => Err(CallError::Thrown {
            name: match text(e.get("name")) {
                n if n.is_empty() => "Error".to_string(),
                n => n,
            },
            message: text(e.get("message")),
            stack: text(e.get("stack")),
        }),
        _ => Err(CallError::BadResult(
            "the result line has neither \"ok\" nor an \"error\" object".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn out(stdout: &str) -> Output {
        Output {
            stdout: stdout.as_bytes().to_vec(),
            exit_code: Some(0),
            ..Default::default()
        }
    }

    #[test]
    fn ok_and_error_lines() {
        assert_eq!(
            parse_result(&out("{\"ok\":{\"a\":[1,2]}}\n")).unwrap(),
            json!({"a": [1, 2]})
        );
        match parse_result(&out(
            "{\"error\":{\"name\":\"ValueError\",\"message\":\"bad\",\"stack\":\"tb\"}}\n",
        )) {
            Err(CallError::Thrown {
                name,
                message,
                stack,
            }) => assert_eq!(
                (name.as_str(), message.as_str(), stack.as_str()),
                ("ValueError", "bad", "tb")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_lines_are_refused() {
        for s in [
            "",
            "not json\n",
            "[1]\n",
            "{\"ok\":1,\"error\":2}\n",
            "{\"error\":3}\n",
            "{}\n",
        ] {
            assert!(parse_result(&out(s)).is_err(), "{s:?}");
        }
        let mut o = out("");
        o.exit_code = None;
        o.signal = Some(9);
        o.timed_out = true;
        match parse_result(&o) {
            Err(CallError::NoResult { timed_out, .. }) => assert!(timed_out),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn args() {
        assert_eq!(args_array(&json!([1, "a"])), b"[1,\"a\"]".to_vec());
        assert_eq!(args_array(&json!({"k": 1})), b"[{\"k\":1}]".to_vec());
    }
}
