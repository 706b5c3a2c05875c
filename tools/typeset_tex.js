// Typeset TeX formulas with MathJax 3 (mathjax-full), as the book's pages do; print the ones it rejects.
// Input on stdin: a JSON list of [display (bool), tex (string)].  Output: a JSON list of
// [index, error message] for every formula MathJax reports an error for.  Used by check_render.py.
const {mathjax} = require('mathjax-full/js/mathjax.js');
const {TeX} = require('mathjax-full/js/input/tex.js');
const {AllPackages} = require('mathjax-full/js/input/tex/AllPackages.js');
const {liteAdaptor} = require('mathjax-full/js/adaptors/liteAdaptor.js');
const {RegisterHTMLHandler} = require('mathjax-full/js/handlers/html.js');

RegisterHTMLHandler(liteAdaptor());
const packages = AllPackages.filter((name) => !['bussproofs', 'noundefined'].includes(name));  // unknown macros are errors
const tex = new TeX({packages: packages, formatError: (jax, err) => { throw err; }});
const doc = mathjax.document('', {InputJax: tex});
const formulas = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const errors = [];
formulas.forEach(([display, source], i) => {
  try {
    doc.convert(source, {display: display});
  } catch (err) {
    errors.push([i, String(err.message || err)]);
  }
});
process.stdout.write(JSON.stringify(errors));
