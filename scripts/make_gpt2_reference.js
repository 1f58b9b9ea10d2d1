#!/usr/bin/env node
// Writes test/data/tokenizer/gpt2_reference.jsonl: a few hundred varied texts and their
// GPT-2 token ids from an independent implementation, for the exact-match tests.
//
//   make gpt2-reference     (installs the npm packages below into build/node, runs this)
//
// Reference: js-tiktoken's gpt2 encoding with one change: its pattern's \s and \S are
// written \p{White_Space} and \P{White_Space}, the set tiktoken's own (Rust) regex means
// by \s; JavaScript's \s differs (it has U+FEFF, lacks U+0085). The script also encodes
// every text with the unchanged js-tiktoken and with gpt-3-encoder (a port of GPT-2's
// encoder.py) and reports where they disagree, to show which differences are which.
//
// Texts: hand-picked edge cases, slices of test/data/shakespeare_64k.txt, random mixes of
// awkward characters (seeded, so the file is reproducible), and ill-formed UTF-8 (stored
// as hex; the reference encodes what a WHATWG decoder makes of it, U+FFFD per maximal
// subpart). Characters are ones Unicode 14 already assigns: PCRE2 10.42 knows no later.
"use strict";
const fs = require("fs");
const path = require("path");
const { Tiktoken } = require("js-tiktoken/lite");
const gpt2 = require("js-tiktoken/ranks/gpt2");
const gpt3enc = require("gpt-3-encoder");

const root = path.join(__dirname, "..");
const out = path.join(root, "test/data/tokenizer/gpt2_reference.jsonl");
const classes_out = path.join(root, "test/data/tokenizer/unicode_classes.txt");

const patched = {
    ...gpt2,
    pat_str: gpt2.pat_str.replace(/\\s/g, "\\p{White_Space}").replace(/\\S/g, "\\P{White_Space}"),
};
const ref = new Tiktoken(patched);
const plain = new Tiktoken(gpt2);
// allowedSpecial = [], disallowedSpecial = []: "<|endoftext|>" is ordinary text
const encode = (enc, s) => enc.encode(s, [], []);

// mulberry32: a small seeded PRNG, so the texts are the same on every run
let seed = 20240520;
function rand() {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];

const texts = [];  // [name, text]
const add = (name, t) => texts.push([name, t]);

// ---- hand-picked edge cases
const cases = {
    empty: "", space: " ", spaces2: "  ", tab: "\t", newline: "\n", newlines2: "\n\n",
    crlf: "\r\n", space_nl: " \n", nl_space: "\n ", two_spaces_word: "a  b",
    three_spaces_word: "a   b", tabs_word: "a\t\tb", space_tab_space: "a \t b",
    trailing_spaces: "hello   ", leading_spaces: "   hello", blank_lines: "hello\n\n\nworld",
    indent: "def f(x):\n    return x\n\n\n    \n", mixed_ws: " \t \n \r\n\t\t  \n x",
    ws_before_word: "x \n y", crlf_text: "line one\r\nline two\r\n\r\nline four",
    contractions: "I'm you're he's she'd we'll they've don't won't can't",
    contractions_upper: "I'M YOU'RE HE'S SHE'D WE'LL THEY'VE DON'T",
    contractions_odd: "'s 's' ''s ''' y'all rock'n'roll O'Neil's won't've 'll've",
    apostrophes: "the dog's bone, the dogs' bones, 'quoted' and \u2019curly\u2019 quotes",
    numbers: "123 1,234.56 3.14159e-10 0x1F 2024-05-20 +1 (555) 010-9999",
    numbers_unicode: "\u0663\u0664\u0665 \u00b2\u00b3 \u00bd \u216b \uff11\uff12\uff13 \u{1d7d8}\u{1d7d9}",
    emoji: "\u{1F600} \u{1F44D}\u{1F3FD} \u{1F468}\u200d\u{1F469}\u200d\u{1F467}\u200d\u{1F466}",
    flags: "\u{1F1FA}\u{1F1F8}\u{1F1EB}\u{1F1F7} \u2764\ufe0f \u{1F3F3}\ufe0f\u200d\u{1F308}",
    emoji_words: "a\u{1F600}b \u{1F600}\u{1F600}\u{1F600} ok\u{1F44D}",
    chinese: "\u4e2d\u6587\u6d4b\u8bd5\uff0c\u8fd9\u662f\u4e00\u4e2a\u53e5\u5b50\u3002",
    japanese: "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u30ab\u30bf\u30ab\u30ca\u3002",
    korean: "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4.",
    cjk_ideographic_space: "\u6f22\u5b57\u3000\u5168\u89d2\u30b9\u30da\u30fc\u30b9",
    combining: "e\u0301 Cafe\u0301 a\u0308\u0304 n\u0303o",
    zalgo: "Z\u0334\u0321\u0327\u031ba\u0338l\u0336g\u0337o\u0335",
    devanagari: "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    thai: "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    hebrew: "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd \u05e2\u05d5\u05dc\u05dd",
    arabic: "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    vietnamese: "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
    greek_cyrillic: "Hello, \u043c\u0438\u0440! \u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u1f08\u03bb\u03ad\u03be\u03b1\u03bd\u03b4\u03c1\u03bf\u03c2",
    scripts: "\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8 \u0570\u0561\u0575\u0565\u0580\u0565\u0576 \u12a0\u121b\u122d\u129b \u13e3\u13b3\u13a9",
    math: "\u2200x\u2208\u211d: x\u00b2\u22650, \u2211_{i=1}^n i = n(n+1)/2",
    math_alnum: "\u{1d518}\u{1d52b}\u{1d526}\u{1d520}\u{1d52c}\u{1d521}\u{1d522} \u{1d7d8}\u{1d7d9}\u{1d7da}",
    astral: "\u{10348}\u{10330} \u{13000}\u{13001} \u{20000}\u{2A6D6}",
    nbsp: "a\u00a0b \u00a0 \u00a0\u00a0x",
    em_space: "a\u2003b a\u2009\u200ab",
    ideographic_space: "a\u3000b \u3000\u3000",
    line_para_sep: "a\u2028b\u2029c",
    nel: "a\u0085b \u0085\u0085 x",
    bom: "\ufeffhello a\ufeffb",
    mongolian_vs: "a\u180eb \u180e x",
    zero_width: "a\u200bb\u200cc\u200dd\u2060e",
    vt_ff: "a\u000bb\u000cc",
    separators_1c_1f: "a\u001cb\u001dc\u001ed\u001fe",
    controls: "\u0000\u0001\u0002\u007f\u0080\u009f",
    soft_hyphen: "co\u00adop\u00aderate",
    private_use: "\ue000\uf8ff \u{F0000}",
    nonchars: "\ufdd0 \ufffe\uffff \ufffd",
    eot: "<|endoftext|>",
    eot_inline: "a<|endoftext|>b",
    eot_twice: "<|endoftext|><|endoftext|>",
    eot_lines: "first\n<|endoftext|>\nsecond",
    eot_spaced: "< |endoftext| > <|endoftext |> <|ENDOFTEXT|>",
    startoftext: "<|startoftext|>hi",
    python: "def fib(n):\n\tif n < 2:\n\t\treturn n\n\treturn fib(n-1) + fib(n-2)\n",
    c_code: "int main(void) {\n    printf(\"%d\\n\", 42);  // answer\n    return 0;\n}\n",
    json: '{"key": "value", "list": [1, 2.5, null, true], "nested": {"a": "\\u00e9"}}',
    html: "<div class=\"x\"><p>Hello&nbsp;world &amp; <b>friends</b></p></div>",
    url_email: "https://example.com/path?q=1&r=two#frag mailto:someone@example.org",
    markdown: "| a | b |\n|---|---|\n| 1 | 2 |\n\n**bold** _it_ `code` > quote",
    spaces_100: " ".repeat(100),
    spaces_1000_x: " ".repeat(1000) + "x",
    newlines_50: "\n".repeat(50),
    tabs_30: "\t".repeat(30) + "y",
    letters_500: "a".repeat(500),
    ab_300: "ab".repeat(300),
    emoji_100: "\u{1F600}".repeat(100),
    digits_300: "1234567890".repeat(30),
    bangs_200: "!".repeat(200),
    eqdash_100: "=-".repeat(100),
    long_word: "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    cjk_long: "\u6f22".repeat(300),
    mixed_short: "a1!\u4e2d \u{1F600}'s\n",
};
for (const [k, v] of Object.entries(cases)) add(k, v);

// ---- the whole of test/data/shakespeare_64k.txt, once
add("shakespeare_64k_whole", fs.readFileSync(path.join(root, "test/data/shakespeare_64k.txt"), "utf8"));

// ---- slices of Shakespeare, cut at line starts or anywhere
const shakespeare = fs.readFileSync(path.join(root, "test/data/shakespeare_64k.txt"), "utf8");
for (let i = 0; i < 80; i++) {
    const len = Math.floor(1 + rand() * rand() * 2000);
    const start = Math.floor(rand() * (shakespeare.length - len));
    add(`shakespeare_${i}`, shakespeare.slice(start, start + len));
}

// ---- random mixes of awkward pieces
const atoms = [
    " ", " ", " ", "  ", "\t", "\n", "\n", "\r", "\r\n", "\u00a0", "\u3000", "\u2028", "\u0085",
    "\ufeff", "\u180e", "\u200b", "\u000b", "a", "Z", "x", "word", " the", "The", "ing", "\u00e9",
    "e\u0301", "\u00df", "1", "42", "2024", "\u00b2", "\u00bd", "\u0663", "'", "'", "'s", "'S",
    "'ll", "'ve", "'re", "'d", "'m", "'t", "!", ".", ",", "?", "-", "_", "@", "#", "\"", "(",
    ")", "<|endoftext|>", "<", "|", ">", "\u4e2d", "\u8a9e", "\u3002", "\u{1F600}",
    "\u{1F44D}\u{1F3FD}", "\u200d", "\u0300", "\u03a9", "\u0439", "\u0627", "\u05d4", "\u0e01",
    "\u0915", "\u094d", "\u{1d518}", "\u{1d7d9}", "\u0000", "\u001f", "\u007f", "\ufffd",
    "\u2019", "\u2014", "\u00ad", "$", "\u20ac", "%",
];
for (let i = 0; i < 220; i++) {
    const n = Math.floor(1 + rand() * 60);
    let s = "";
    for (let j = 0; j < n; j++) s += pick(atoms);
    add(`random_${i}`, s);
}

// ---- ill-formed UTF-8, as hex
const bad = {
    ff: "ff", c0af_overlong: "c0af", surrogate: "eda080", truncated_3: "e282",
    stray_continuation: "61626380646566", above_max: "f4908080", truncated_emoji: "f09f98",
    truncated_emoji_end: "68656c6c6f20f09f98", lone_lead_then_ascii: "c2616263",
    overlong_nul: "c080", fe_ff: "fefe ffff", e0_overlong: "e08080", f0_overlong: "f08f8080",
    many_continuations: "80808080", mixed_valid: "e4b8ade69687ffe6b58b",
    cesu_pair: "eda0bdedb880", f5: "f5808080", max_valid: "f48fbfbf", latin1: "63616ff9e9",
    half_then_space: "e4b820e4b8ad",
};
const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

// ---- write
const lines = [];
let agree_plain = 0, agree_gpt3 = 0;
const diffs = [];
for (const [name, text] of texts) {
    const ids = encode(ref, text);
    if (encode(plain, text).join() === ids.join()) agree_plain++;
    else diffs.push(`${name}: unchanged js-tiktoken differs (JavaScript's \\s)`);
    if (gpt3enc.encode(text).join() === ids.join()) agree_gpt3++;
    else diffs.push(`${name}: gpt-3-encoder differs`);
    // round trip on bytes (decode() would drop a leading BOM)
    const back = Buffer.concat(ids.map((id) => Buffer.from(ref.textMap.get(id))));
    if (!back.equals(Buffer.from(text, "utf8"))) throw new Error(`${name}: no round trip`);
    lines.push(JSON.stringify({ name, text, ids }));
}
for (const [name, hex] of Object.entries(bad)) {
    const bytes = Buffer.from(hex.replace(/ /g, ""), "hex");
    const ids = encode(ref, decoder.decode(bytes));
    lines.push(JSON.stringify({ name: `invalid_${name}`, hex: hex.replace(/ /g, ""), ids }));
}
fs.writeFileSync(out, lines.join("\n") + "\n");
console.log(`wrote ${lines.length} cases to ${path.relative(root, out)}`);
console.log(`unchanged js-tiktoken agrees on ${agree_plain}/${texts.length}, ` +
            `gpt-3-encoder on ${agree_gpt3}/${texts.length}`);
for (const d of diffs) console.log("  " + d);

// ---- the character classes GPT-2's pattern uses, per code point, as runs: "HEX CLASS"
// lines where the class changes (L letter, N number, W White_Space, O other), so the
// tests can compare PCRE2's Unicode tables with this engine's.
const cls = (c) => (/\p{L}/u.test(c) ? "L" : /\p{N}/u.test(c) ? "N" : /\p{White_Space}/u.test(c) ? "W" : "O");
const runs = [`# Unicode ${process.versions.unicode} (node ${process.version}): first code point of each run, class`];
let prev = "";
for (let cp = 0; cp <= 0x10ffff; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;  // surrogates: not characters, not in UTF-8
    const c = cls(String.fromCodePoint(cp));
    if (c !== prev) runs.push(`${cp.toString(16)} ${c}`), (prev = c);
}
fs.writeFileSync(classes_out, runs.join("\n") + "\n");
console.log(`wrote ${runs.length - 1} class runs to ${path.relative(root, classes_out)}`);
