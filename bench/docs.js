// Writing a benchmark's result into its page in docs/: between `<!-- name:begin -->` and
// `<!-- name:end -->`, the rest of the page untouched (no markers: nothing written).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

export function writeSection(file, name, md) {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const begin = `<!-- ${name}:begin -->`;
  const end = `<!-- ${name}:end -->`;
  if (text.includes(begin) && text.includes(end)) writeFileSync(file, text.slice(0, text.indexOf(begin) + begin.length) + '\n' + md + text.slice(text.indexOf(end)));
}
