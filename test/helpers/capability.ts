// Tests that need something of the machine (root and /dev/net/tun, etcd): run when it is there;
// otherwise fail under CI=true (a missing capability is a failure there), and outside CI (a
// developer's machine without it) skip with the reason printed. A skip never stands in for a
// missing feature: CI always runs them.
import { describe } from 'vitest';

/** `describe` for tests needing what `missing` lacks (empty: everything is there); `what` names them. */
export function describeWhen(missing: readonly string[], what: string): (name: string, fn: () => void) => void {
  return (name, fn) => {
    if (missing.length === 0) {
      describe(name, fn);
      return;
    }
    if (process.env.CI === 'true') {
      describe(name, () => {
        throw new Error(`${what} need ${missing.join(', ')} (CI=true: a missing capability is a failure)`);
      });
      return;
    }
    console.warn(`skipping "${name}": needs ${missing.join(', ')}`);
    describe.skip(name, fn);
  };
}
