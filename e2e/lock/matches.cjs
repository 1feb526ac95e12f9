// matches.cjs LOCK PREFIX exits 0 when the packages installed under PREFIX
// (npm's record of them, node_modules/.package-lock.json) are exactly those
// of the committed lockfile LOCK: the same paths, versions and integrity
// hashes. setup.sh uses it to keep a cached prefix that needs no install.
const fs = require("node:fs");
const path = require("node:path");
const [lockPath, prefix] = process.argv.slice(2);
const read = (p) => JSON.parse(fs.readFileSync(p, "utf8"));
let lock, installed;
try {
  lock = read(lockPath).packages;
  installed = read(path.join(prefix, "node_modules", ".package-lock.json")).packages;
} catch (e) {
  console.error(`matches: ${e.message}`);
  process.exit(1);
}
const want = Object.keys(lock).filter((k) => k !== "");
const have = Object.keys(installed).filter((k) => k !== "");
let bad = 0;
for (const k of want) {
  const a = lock[k], b = installed[k];
  // Optional packages for other platforms are locked but not installed.
  if (!b && a.optional) continue;
  if (!b || a.version !== b.version || (a.integrity && a.integrity !== b.integrity)) {
    if (bad++ < 5) console.error(`matches: ${k}: locked ${a.version}, installed ${b ? b.version : "none"}`);
  }
}
for (const k of have) {
  if (!(k in lock) && bad++ < 5) console.error(`matches: ${k}: installed, not locked`);
}
process.exit(bad ? 1 : 0);
