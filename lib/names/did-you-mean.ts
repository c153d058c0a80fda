/**
 * "Did you mean" for unknown keys: a typo must be reported, and the report
 * should name the key that was meant.
 */

/** Levenshtein distance, small inputs only (keys are a few dozen characters). */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** Case and `_` versus `-` do not count as typos: `Remove_Shm_On_Stop` means `remove-shm-on-stop`. */
function fold(key: string): string {
  return key.toLowerCase().replaceAll('_', '-');
}

/**
 * The candidate closest to `key`, or `null` when none is close enough: at
 * most 2 edits apart (after folding case and `_`), and fewer edits than the
 * key has characters so that `x` does not "mean" `hdr`.
 */
function closestKey(key: string, candidates: Iterable<string>): string | null {
  const folded = fold(key);
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = distance(folded, fold(candidate));
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best !== null && bestDistance <= 2 && bestDistance < key.length ? best : null;
}

/** `"; did you mean 'user'?"` or `''`. */
export function didYouMean(key: string, candidates: Iterable<string>, quote: (s: string) => string = (s) => `'${s}'`): string {
  const best = closestKey(key, candidates);
  return best === null ? '' : `; did you mean ${quote(best)}?`;
}

/** Folded for name comparison: case, spaces, `-`, `_` and `.` do not count. */
function foldName(name: string): string {
  return name.toLowerCase().replace(/[\s_.-]+/g, '');
}

/** Is `short` a subsequence of `long` (`win10` in `windows10`)? */
function isSubsequence(short: string, long: string): boolean {
  let i = 0;
  for (const c of long) if (c === short[i]) i++;
  return i === short.length;
}

/**
 * The configured VM name a domain name probably meant (`[vm.win10]` for a
 * domain `Windows 10`), or null: equal after folding case and separators, at
 * most 2 edits apart, or one a subsequence of the other (the shorter at
 * least 3 characters). Names are compared folded; the candidate is returned
 * as written.
 */
export function closestName(name: string, candidates: Iterable<string>): string | null {
  const folded = foldName(name);
  let best: string | null = null;
  let bestScore = Infinity;
  for (const candidate of candidates) {
    const other = foldName(candidate);
    if (other === folded) return candidate;
    const [short, long] = other.length <= folded.length ? [other, folded] : [folded, other];
    const d = distance(folded, other);
    const score =
      d <= 2 && d < Math.min(folded.length, other.length)
        ? d
        : short.length >= 3 && isSubsequence(short, long)
          ? 3 + long.length - short.length
          : Infinity;
    if (score < bestScore) {
      best = candidate;
      bestScore = score;
    }
  }
  return best;
}
