#!/usr/bin/env node
// js-tiktoken's GPT-2 encoding on a file, on one thread or on N worker threads:
//   node bench/tokenizer_bench.js FILE THREADS [IDS_OUT]
// prints "js-tiktoken threads=N bytes=B tokens=T seconds=S MB/s=X". The pattern's \s is
// spelled \p{White_Space} as in scripts/make_gpt2_reference.js, so the ids are tiktoken's
// and can be compared with ours; it runs at the same speed as the unchanged pattern.
"use strict";
const fs = require("fs");
const { Worker, isMainThread, parentPort, workerData } = require("worker_threads");
const { Tiktoken } = require("js-tiktoken/lite");
const gpt2 = require("js-tiktoken/ranks/gpt2");

const make = () => new Tiktoken({
    ...gpt2,
    pat_str: gpt2.pat_str.replace(/\\s/g, "\\p{White_Space}").replace(/\\S/g, "\\P{White_Space}"),
});

if (!isMainThread) {
    const enc = make();
    parentPort.postMessage("ready");
    parentPort.once("message", () => {
        const n = enc.encode(workerData, [], []).length;
        parentPort.postMessage(n);
    });
    return;
}

const [file, threadsArg, idsOut] = process.argv.slice(2);
const threads = Math.max(1, parseInt(threadsArg || "1", 10));
const text = fs.readFileSync(file, "utf8");
const bytes = Buffer.byteLength(text);
const report = (tokens, s) =>
    console.log(`js-tiktoken threads=${threads} bytes=${bytes} tokens=${tokens} ` +
                `seconds=${s.toFixed(3)} MB/s=${(bytes / 1e6 / s).toFixed(2)}`);

if (threads === 1) {
    const enc = make();
    const t0 = process.hrtime.bigint();
    const ids = enc.encode(text, [], []);
    report(ids.length, Number(process.hrtime.bigint() - t0) / 1e9);
    if (idsOut) fs.writeFileSync(idsOut, Buffer.from(Uint32Array.from(ids).buffer));
} else {
    // chunks cut after "\n" before a printable ASCII character, where GPT-2's pieces
    // cannot cross (the token count then equals the one-thread count)
    const chunks = [];
    let start = 0;
    for (let i = 1; i < threads; i++) {
        let p = Math.floor((text.length * i) / threads);
        const re = /[!-~]\n(?=[!-~])/g;
        re.lastIndex = Math.max(p, start);
        const m = re.exec(text);
        if (!m) break;
        p = m.index + 2;
        chunks.push(text.slice(start, p));
        start = p;
    }
    chunks.push(text.slice(start));
    const workers = chunks.map((c) => new Worker(__filename, { workerData: c }));
    const ready = workers.map((w) => new Promise((r) => w.once("message", r)));
    Promise.all(ready).then(() => {
        const t0 = process.hrtime.bigint();
        const done = workers.map((w) => new Promise((r) => w.once("message", r)));
        workers.forEach((w) => w.postMessage("go"));
        Promise.all(done).then((counts) => {
            report(counts.reduce((a, b) => a + b, 0), Number(process.hrtime.bigint() - t0) / 1e9);
            workers.forEach((w) => w.terminate());
        });
    });
}
