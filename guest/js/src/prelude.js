// Prelude of the embervm `qjs` runtime: the globals that QuickJS itself does
// not provide (console, process, timers, readStdin, std, print).
//
// This file is evaluated once as a classic script before the user's program.
// It is a single function expression; the Rust side calls it with an object
// of native helpers and gets back the hooks the event loop needs. Nothing of
// `native` is reachable from user code afterwards.
(function (native) {
  "use strict";

  const STDOUT = 1;
  const STDERR = 2;

  // Lone surrogates cannot be written as UTF-8: replace them with U+FFFD.
  const toWellFormed = String.prototype.toWellFormed;
  const wellFormed = (s) => toWellFormed.call(s);
  const write = (fd, chunk) =>
    native.write(fd, typeof chunk === "string" ? wellFormed(chunk) : chunk);

  // ---- inspect: a compact re-implementation of Node's util.inspect ----------

  const BREAK_LENGTH = 80;
  const MAX_ARRAY_LENGTH = 100;
  const DEFAULT_DEPTH = 2;
  const IDENT = /^[A-Za-z_][A-Za-z_0-9]*$/;
  const objToString = Object.prototype.toString;
  const fnToString = Function.prototype.toString;

  function quote(s) {
    let q = "'";
    if (s.includes("'")) {
      if (!s.includes('"')) q = '"';
      else if (!s.includes("`") && !s.includes("${")) q = "`";
    }
    let out = q;
    for (const ch of s) {
      const c = ch.codePointAt(0);
      if (ch === q || ch === "\\") out += "\\" + ch;
      else if (ch === "\n") out += "\\n";
      else if (ch === "\t") out += "\\t";
      else if (ch === "\r") out += "\\r";
      else if (ch === "\b") out += "\\b";
      else if (ch === "\f") out += "\\f";
      else if (ch === "\v") out += "\\v";
      else if (c < 0x20 || c === 0x7f)
        out += "\\x" + c.toString(16).toUpperCase().padStart(2, "0");
      else out += ch;
    }
    return out + q;
  }

  function formatNumber(n) {
    return Object.is(n, -0) ? "-0" : String(n);
  }

  function formatKey(key) {
    if (typeof key === "symbol") return "[" + key.toString() + "]";
    return IDENT.test(key) ? key : quote(key);
  }

  function formatPrimitive(v, nested) {
    switch (typeof v) {
      case "string":
        return nested ? quote(v) : v;
      case "number":
        return formatNumber(v);
      case "bigint":
        return v + "n";
      case "symbol":
        return v.toString();
      default:
        return String(v); // boolean, undefined
    }
  }

  function functionBase(fn) {
    let src = "";
    try {
      src = fnToString.call(fn);
    } catch (_) {
      // ignore: native or revoked proxy
    }
    const name = typeof fn.name === "string" ? fn.name : "";
    if (src.startsWith("class") && /^class\b/.test(src)) {
      const m = /^class\s+[^{]*?\bextends\s+([\w$.]+)/.exec(src);
      return "[class " + (name || "(anonymous)") + (m ? " extends " + m[1] : "") + "]";
    }
    let kind = "Function";
    const tag = objToString.call(fn).slice(8, -1);
    if (tag === "AsyncFunction" || tag === "GeneratorFunction" || tag === "AsyncGeneratorFunction")
      kind = tag;
    return name ? "[" + kind + ": " + name + "]" : "[" + kind + " (anonymous)]";
  }

  function constructorName(obj) {
    let proto;
    try {
      proto = Object.getPrototypeOf(obj);
    } catch (_) {
      return "Object";
    }
    if (proto === null) return null;
    const desc = Object.getOwnPropertyDescriptor(proto, "constructor");
    if (desc && typeof desc.value === "function" && typeof desc.value.name === "string")
      return desc.value.name || "Object";
    return "Object";
  }

  function errorHeader(err) {
    let name = "Error";
    let message = "";
    try {
      name = String(err.name);
      message = err.message === undefined ? "" : String(err.message);
    } catch (_) {
      // keep defaults
    }
    return message ? name + ": " + message : name;
  }

  function formatError(err, nested) {
    const header = errorHeader(err);
    let stack = "";
    try {
      stack = typeof err.stack === "string" ? err.stack.replace(/\s+$/, "") : "";
    } catch (_) {
      // ignore
    }
    if (nested || !stack) return "[" + header + "]";
    return header + "\n" + stack;
  }

  function isBelowBreakLength(output, start) {
    let total = output.length + start;
    if (total + output.length > BREAK_LENGTH) return false;
    for (const entry of output) {
      total += entry.length;
      if (total > BREAK_LENGTH) return false;
    }
    return true;
  }

  // Node's groupArrayElements: lay out long arrays of short items in columns.
  function groupArrayElements(ctx, output, value, hasMore) {
    let totalLength = 0;
    let maxLength = 0;
    const outputLength = hasMore ? output.length - 1 : output.length;
    const separatorSpace = 2;
    const dataLen = new Array(outputLength);
    for (let i = 0; i < outputLength; i++) {
      const len = output[i].length;
      dataLen[i] = len;
      totalLength += len + separatorSpace;
      if (maxLength < len) maxLength = len;
    }
    const actualMax = maxLength + separatorSpace;
    if (
      actualMax * 3 + ctx.indent < BREAK_LENGTH &&
      (totalLength / actualMax > 5 || maxLength <= 6)
    ) {
      const averageBias = Math.sqrt(actualMax - totalLength / output.length);
      const biasedMax = Math.max(actualMax - 3 - averageBias, 1);
      const columns = Math.min(
        Math.round(Math.sqrt(2.5 * biasedMax * outputLength) / biasedMax),
        Math.floor((BREAK_LENGTH - ctx.indent) / actualMax),
        12,
        15
      );
      if (columns <= 1) return output;
      const tmp = [];
      const maxLineLength = [];
      for (let i = 0; i < columns; i++) {
        let lineLength = 0;
        for (let j = i; j < output.length; j += columns) {
          if (dataLen[j] > lineLength) lineLength = dataLen[j];
        }
        maxLineLength.push(lineLength + separatorSpace);
      }
      let padStart = true;
      if (value !== undefined) {
        for (let i = 0; i < outputLength; i++) {
          if (typeof value[i] !== "number" && typeof value[i] !== "bigint") {
            padStart = false;
            break;
          }
        }
      }
      for (let i = 0; i < outputLength; i += columns) {
        const max = Math.min(i + columns, outputLength);
        let str = "";
        let j = i;
        for (; j < max - 1; j++) {
          const cell = output[j] + ", ";
          str += padStart
            ? cell.padStart(maxLineLength[j - i], " ")
            : cell.padEnd(maxLineLength[j - i], " ");
        }
        str += padStart
          ? output[j].padStart(maxLineLength[j - i] - separatorSpace, " ")
          : output[j];
        tmp.push(str);
      }
      if (hasMore) tmp.push(output[outputLength]);
      return tmp;
    }
    return output;
  }

  function reduceToSingleString(ctx, output, prefix, braces, grouped) {
    if (!grouped) {
      const start = output.length + ctx.indent + braces[0].length + prefix.length + 10;
      if (isBelowBreakLength(output, start)) {
        const joined = output.join(", ");
        if (!joined.includes("\n")) {
          return prefix + braces[0] + " " + joined + " " + braces[1];
        }
      }
    }
    const ind = "\n" + " ".repeat(ctx.indent);
    return prefix + braces[0] + ind + "  " + output.join("," + ind + "  ") + ind + braces[1];
  }

  function formatProperty(ctx, obj, key, depth) {
    const desc = Object.getOwnPropertyDescriptor(obj, key);
    let str;
    if (desc === undefined) {
      str = "undefined";
    } else if ("value" in desc) {
      ctx.indent += 2;
      str = formatValue(ctx, desc.value, depth + 1);
      ctx.indent -= 2;
    } else if (desc.get) {
      str = desc.set ? "[Getter/Setter]" : "[Getter]";
    } else {
      str = desc.set ? "[Setter]" : "undefined";
    }
    return formatKey(key) + ": " + str;
  }

  function ownEnumerableKeys(obj) {
    const keys = Object.keys(obj);
    for (const sym of Object.getOwnPropertySymbols(obj)) {
      const d = Object.getOwnPropertyDescriptor(obj, sym);
      if (d && d.enumerable) keys.push(sym);
    }
    return keys;
  }

  function formatList(ctx, value, depth, length, getItem) {
    const output = [];
    let holes = 0;
    const shown = Math.min(length, MAX_ARRAY_LENGTH);
    const flushHoles = () => {
      if (holes > 0) {
        output.push("<" + holes + " empty item" + (holes > 1 ? "s" : "") + ">");
        holes = 0;
      }
    };
    for (let i = 0; i < shown; i++) {
      if (!getItem && !Object.prototype.hasOwnProperty.call(value, i)) {
        holes++;
        continue;
      }
      flushHoles();
      ctx.indent += 2;
      output.push(formatValue(ctx, getItem ? getItem(i) : value[i], depth + 1));
      ctx.indent -= 2;
    }
    flushHoles();
    const hasMore = length > shown;
    if (hasMore) {
      const more = length - shown;
      output.push("... " + more + " more item" + (more > 1 ? "s" : ""));
    }
    return { output, hasMore };
  }

  function formatValue(ctx, value, depth) {
    if (value === null) return "null";
    const type = typeof value;
    if (type !== "object" && type !== "function") return formatPrimitive(value, depth > 0);

    if (ctx.seen.includes(value)) {
      let idx = ctx.circular.get(value);
      if (idx === undefined) {
        idx = ctx.circular.size + 1;
        ctx.circular.set(value, idx);
      }
      return "[Circular *" + idx + "]";
    }

    const result = formatRaw(ctx, value, depth);
    const idx = ctx.circular.get(value);
    return idx === undefined ? result : "<ref *" + idx + "> " + result;
  }

  function formatRaw(ctx, value, depth) {
    if (typeof value === "function") {
      const base = functionBase(value);
      const keys = ownEnumerableKeys(value);
      if (keys.length === 0 || depth > ctx.depth) return base;
      ctx.seen.push(value);
      const output = keys.map((k) => formatProperty(ctx, value, k, depth));
      ctx.seen.pop();
      return reduceToSingleString(ctx, output, base + " ", ["{", "}"], false);
    }

    if (value instanceof Error || objToString.call(value) === "[object Error]")
      return formatError(value, depth > 0);

    const tag = objToString.call(value).slice(8, -1);
    const ctor = constructorName(value);
    const isArray = Array.isArray(value);
    const isTyped = ArrayBuffer.isView(value) && !(value instanceof DataView);

    if (value instanceof Date) {
      const t = value.getTime();
      return Number.isNaN(t) ? "Invalid Date" : value.toISOString();
    }
    if (value instanceof RegExp) return String(value);
    if (value instanceof Number) return "[Number: " + formatNumber(value.valueOf()) + "]";
    if (value instanceof String) return "[String: " + quote(value.valueOf()) + "]";
    if (value instanceof Boolean) return "[Boolean: " + value.valueOf() + "]";
    if (typeof BigInt === "function" && tag === "BigInt") return "[BigInt: " + value.valueOf() + "n]";
    if (value instanceof Symbol) return "[Symbol: " + value.valueOf().toString() + "]";
    if (value instanceof WeakMap) return "WeakMap { <items unknown> }";
    if (value instanceof WeakSet) return "WeakSet { <items unknown> }";

    if (depth > ctx.depth) {
      if (isArray) return "[Array]";
      return "[" + (ctor === null ? "Object: null prototype" : ctor || tag) + "]";
    }

    ctx.seen.push(value);
    let output;
    let braces;
    let grouped = false;
    let prefix = "";
    try {
      if (isArray || isTyped) {
        const len = value.length;
        const list = formatList(ctx, value, depth, len, isTyped ? (i) => value[i] : null);
        output = list.output;
        if (isArray) {
          for (const key of ownEnumerableKeys(value)) {
            if (typeof key === "string" && /^(0|[1-9][0-9]*)$/.test(key)) continue;
            output.push(formatProperty(ctx, value, key, depth));
          }
          braces = ctor === "Array" ? ["[", "]"] : [ctor + "(" + len + ") [", "]"];
        } else {
          braces = [(ctor || tag) + "(" + len + ") [", "]"];
        }
        if (output.length > 6 && output.length === list.output.length) {
          const g = groupArrayElements(ctx, output, value, list.hasMore);
          grouped = g !== output;
          output = g;
        }
      } else if (value instanceof Map) {
        output = [];
        ctx.indent += 2;
        for (const [k, v] of value) {
          output.push(formatValue(ctx, k, depth + 1) + " => " + formatValue(ctx, v, depth + 1));
        }
        ctx.indent -= 2;
        braces = [(ctor || "Map") + "(" + value.size + ") {", "}"];
      } else if (value instanceof Set) {
        output = [];
        ctx.indent += 2;
        for (const v of value) output.push(formatValue(ctx, v, depth + 1));
        ctx.indent -= 2;
        braces = [(ctor || "Set") + "(" + value.size + ") {", "}"];
      } else if (value instanceof Promise) {
        const st = native.promiseState(value);
        if (st[0] === "pending") output = ["<pending>"];
        else {
          ctx.indent += 2;
          const v = formatValue(ctx, st[1], depth + 1);
          ctx.indent -= 2;
          output = [st[0] === "rejected" ? "<rejected> " + v : v];
        }
        braces = ["Promise {", "}"];
      } else if (value instanceof ArrayBuffer) {
        const bytes = new Uint8Array(value);
        const shown = Array.from(bytes.subarray(0, 50), (b) => b.toString(16).padStart(2, "0"));
        const more = bytes.length > 50 ? " ... " + (bytes.length - 50) + " more bytes" : "";
        output = ["[Uint8Contents]: <" + shown.join(" ") + more + ">", "byteLength: " + value.byteLength];
        braces = ["ArrayBuffer {", "}"];
      } else {
        output = ownEnumerableKeys(value).map((k) => formatProperty(ctx, value, k, depth));
        if (ctor === null) prefix = "[Object: null prototype] ";
        else if (ctor !== "Object") prefix = ctor + " ";
        else if (tag !== "Object") prefix = "Object [" + tag + "] ";
        if (output.length === 0) return prefix + "{}";
        braces = ["{", "}"];
      }
    } finally {
      ctx.seen.pop();
    }
    if (output.length === 0) {
      return prefix + braces[0] + braces[1];
    }
    return reduceToSingleString(ctx, output, prefix, braces, grouped);
  }

  function inspect(value, depth) {
    const ctx = {
      seen: [],
      circular: new Map(),
      indent: 0,
      depth: depth === undefined ? DEFAULT_DEPTH : depth,
    };
    return formatValue(ctx, value, 0);
  }

  // Node's util.format: printf-style directives in a leading string, then the
  // remaining arguments inspected and joined by a space.
  function format(args) {
    if (args.length === 0) return "";
    const first = args[0];
    let out = "";
    let a = 1;
    if (typeof first === "string") {
      if (args.length === 1) return first;
      let last = 0;
      for (let i = 0; i < first.length - 1; i++) {
        if (first.charCodeAt(i) !== 37) continue; // '%'
        const c = first[i + 1];
        if (c === "%") {
          out += first.slice(last, i) + "%";
          last = i + 2;
          i++;
          continue;
        }
        if (a >= args.length) continue;
        let rep;
        const arg = args[a];
        switch (c) {
          case "s":
            if (typeof arg === "string") rep = arg;
            else if (typeof arg === "bigint") rep = arg + "n";
            else if (typeof arg === "number") rep = formatNumber(arg);
            else if (typeof arg === "object" && arg !== null) rep = inspect(arg, 1);
            else rep = String(arg);
            break;
          case "d":
          case "i":
            if (typeof arg === "bigint") rep = arg + "n";
            else if (typeof arg === "symbol") rep = "NaN";
            else if (c === "i") rep = formatNumber(parseInt(arg));
            else rep = formatNumber(Number(arg));
            break;
          case "f":
            rep = typeof arg === "symbol" ? "NaN" : formatNumber(parseFloat(arg));
            break;
          case "j":
            try {
              rep = JSON.stringify(arg);
            } catch (_) {
              rep = "[Circular]";
            }
            break;
          case "o":
          case "O":
            rep = inspect(arg, c === "o" ? 4 : DEFAULT_DEPTH);
            break;
          case "c":
            rep = "";
            break;
          default:
            continue;
        }
        out += first.slice(last, i) + rep;
        last = i + 2;
        i++;
        a++;
      }
      out += first.slice(last);
    } else {
      out = inspect(first);
    }
    for (; a < args.length; a++) {
      const v = args[a];
      out += " " + (typeof v === "string" ? v : inspect(v));
    }
    return out;
  }

  // ---- console --------------------------------------------------------------

  let groupIndent = "";

  function emit(fd, args) {
    let text = format(args);
    if (groupIndent) text = groupIndent + text.split("\n").join("\n" + groupIndent);
    write(fd, text + "\n");
  }

  const counts = new Map();
  const timers = new Map();

  const console = {
    log: (...args) => emit(STDOUT, args),
    info: (...args) => emit(STDOUT, args),
    debug: (...args) => emit(STDOUT, args),
    error: (...args) => emit(STDERR, args),
    warn: (...args) => emit(STDERR, args),
    trace: (...args) => {
      const stack = (new Error().stack || "").split("\n").slice(1).join("\n");
      emit(STDERR, ["Trace" + (args.length ? ": " + format(args) : "") + (stack ? "\n" + stack : "")]);
    },
    dir: (value, options) =>
      emit(STDOUT, [inspect(value, options && typeof options.depth === "number" ? options.depth : undefined)]),
    assert: (cond, ...args) => {
      if (!cond) emit(STDERR, ["Assertion failed" + (args.length ? ": " + format(args) : "")]);
    },
    count: (label = "default") => {
      const n = (counts.get(label) || 0) + 1;
      counts.set(label, n);
      emit(STDOUT, [label + ": " + n]);
    },
    countReset: (label = "default") => counts.delete(label),
    time: (label = "default") => timers.set(label, native.now()),
    timeLog: (label = "default", ...args) => {
      const t = timers.get(label);
      if (t !== undefined) emit(STDOUT, [label + ": " + (native.now() - t).toFixed(3) + "ms", ...args]);
    },
    timeEnd: (label = "default") => {
      const t = timers.get(label);
      if (t === undefined) return;
      timers.delete(label);
      emit(STDOUT, [label + ": " + (native.now() - t).toFixed(3) + "ms"]);
    },
    group: (...args) => {
      if (args.length) emit(STDOUT, args);
      groupIndent += "  ";
    },
    groupEnd: () => {
      groupIndent = groupIndent.slice(2);
    },
    table: (...args) => emit(STDOUT, args),
  };
  console.groupCollapsed = console.group;

  // ---- timers ---------------------------------------------------------------

  const pending = new Map();
  let nextTimerId = 1;

  function addTimer(cb, ms, args, repeat) {
    if (typeof cb !== "function") throw new TypeError("The \"callback\" argument must be of type function");
    let delay = Number(ms);
    if (!(delay >= 1 && delay <= 2147483647)) delay = repeat ? 1 : 0;
    const id = nextTimerId++;
    pending.set(id, { due: native.now() + delay, cb, args, repeat: repeat ? delay : 0 });
    return id;
  }

  function clearTimer(id) {
    pending.delete(typeof id === "object" && id !== null ? Number(id) : id);
  }

  // Called by the Rust event loop when the job queue is empty: waits for the
  // earliest timer, runs it, and returns whether one ran.
  function runTimer() {
    let id = 0;
    let timer = null;
    for (const [k, t] of pending) {
      if (timer === null || t.due < timer.due) {
        id = k;
        timer = t;
      }
    }
    if (timer === null) return false;
    const wait = timer.due - native.now();
    if (wait > 0) native.sleep(wait);
    if (timer.repeat) timer.due = native.now() + timer.repeat;
    else pending.delete(id);
    timer.cb(...timer.args);
    return true;
  }

  // ---- process, std, misc ---------------------------------------------------

  function writer(fd) {
    return {
      write(chunk, encoding, cb) {
        write(fd, chunk);
        if (typeof encoding === "function") encoding();
        else if (typeof cb === "function") cb();
        return true;
      },
      isTTY: false,
      fd,
    };
  }

  const argv = native.args;
  const process = {
    argv,
    env: native.env,
    exitCode: undefined,
    platform: "linux",
    pid: native.pid,
    exit(code) {
      const c = code === undefined ? process.exitCode : code;
      native.exit(c === undefined || c === null ? 0 : Number(c) | 0);
    },
    cwd: () => native.cwd(),
    nextTick: (cb, ...args) => queueMicrotask(() => cb(...args)),
    stdout: writer(STDOUT),
    stderr: writer(STDERR),
  };

  const realQueueMicrotask = globalThis.queueMicrotask;
  // QuickJS drops an exception thrown by a queued job on the floor; Node
  // treats it as uncaught, and so do we.
  function queueMicrotask(cb) {
    if (typeof cb !== "function") throw new TypeError("The \"callback\" argument must be of type function");
    realQueueMicrotask(() => {
      try {
        cb();
      } catch (e) {
        native.uncaught(e);
      }
    });
  }

  const define = (name, value) =>
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });

  define("console", console);
  define("process", process);
  define("scriptArgs", argv.slice());
  define("readStdin", () => native.readStdin());
  define("print", (...args) => emit(STDOUT, args));
  define("std", {
    loadFile: (path) => native.loadFile(String(path)),
    writeFile: (path, data) => native.writeFile(String(path), wellFormed(String(data))),
  });
  define("queueMicrotask", queueMicrotask);
  define("setTimeout", (cb, ms, ...args) => addTimer(cb, ms, args, false));
  define("setInterval", (cb, ms, ...args) => addTimer(cb, ms, args, true));
  define("setImmediate", (cb, ...args) => addTimer(cb, 0, args, false));
  define("clearTimeout", clearTimer);
  define("clearInterval", clearTimer);
  define("clearImmediate", clearTimer);

  const promiseResolve = Promise.resolve.bind(Promise);
  return { runTimer, inspect, process, toPromise: (value) => promiseResolve(value) };
});
