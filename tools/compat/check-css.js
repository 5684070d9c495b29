// Fails when a stylesheet uses a CSS feature that the browsers of package.json's browserslist
// (Chromium 49: 360, 搜狗 and QQ browsers in their "fast" mode) do not support.
// doiuse reports; this script decides. A few reports are allowed because the value we use is
// the long-supported one (see ALLOWED); everything else fails the check.
"use strict";
var fs = require("fs");
var postcss = require("postcss");
var doiuse = require("doiuse");

var ALLOWED = {
  // `text-decoration: none | underline` is CSS 2; only the multi-value shorthand is newer.
  "mdn-text-decoration-shorthand": "single keyword values only",
  // `overflow: hidden | auto`; only `overflow: clip` and the two-value form are partial.
  "css-overflow": "single keyword values only",
  // `text-indent: 2em`; only the `hanging` and `each-line` keywords are unsupported.
  "css-text-indent": "length values only"
};

var browsers = require("./package.json").browserslist;
// With no arguments: every stylesheet under a static/ folder and every template under a
// templates/ folder of the repository (two levels above this folder).
function walk(dir, out) {
  fs.readdirSync(dir, { withFileTypes: true }).forEach(function (entry) {
    if (entry.name === "node_modules" || entry.name.charAt(0) === ".") return;
    var full = require("path").join(dir, entry.name);
    if (entry.isDirectory()) walk(full, out);
    else if (/[\/\\]static[\/\\].*\.css$/.test(full) || /[\/\\]templates[\/\\].*\.html$/.test(full)) out.push(full);
  });
  return out;
}
var files = process.argv.length > 2 ? process.argv.slice(2) : walk(require("path").resolve(__dirname, "../.."), []);
var problems = 0;

// Templates: their inline style="…" attributes, each checked as one rule.
function cssOf(file) {
  var text = fs.readFileSync(file, "utf8");
  if (!/\.html$/.test(file)) return text;
  var rules = [], re = /style="([^"{}]*)"/g, m;
  while ((m = re.exec(text)) !== null) rules.push(".inline-" + rules.length + " { " + m[1] + " }");
  return rules.join("\n");
}

files.forEach(function (file) {
  var css = cssOf(file);
  var found = [];
  postcss([doiuse({ browsers: browsers, onFeatureUsage: function (usage) { found.push(usage); } })])
    .process(css, { from: file }).css;
  found.forEach(function (usage) {
    if (ALLOWED[usage.feature]) return;
    problems += 1;
    console.log(usage.message);  // "<file>:<line>:<column>: <feature> not supported by: …"
  });
});
console.log(problems ? problems + " unsupported CSS feature use(s) for " + browsers.join(", ") :
            "CSS OK for " + browsers.join(", ") + " (" + files.length + " file(s))");
process.exit(problems ? 1 : 0);
