/**
 * The NAR wire format: framing tokens as precomputed bytes, and the limits a
 * reader enforces. Pure data, no I/O; the encoder and decoder build on it.
 *
 * Grammar (as in Nix's src/libutil/archive.cc and the Nix manual):
 *
 *   nar    = str("nix-archive-1") node
 *   node   = str("(") str("type") body str(")")
 *   body   = str("regular") [str("executable") str("")] str("contents") str(bytes)
 *          | str("symlink") str("target") str(target)
 *          | str("directory") { entry }
 *   entry  = str("entry") str("(") str("name") str(name) str("node") node str(")")
 *   str(s) = u64 little-endian length of s, s, zero padding to a multiple of 8
 *
 * Side conditions: directory entries are sorted by the unsigned byte order of
 * their names and unique; names are non-empty, not `.` or `..`, and hold no
 * `/` or NUL.
 *
 * The constants below glue together the tokens that always follow each other
 * (as snix's nix-compat does), so that writing a node costs one or two copies.
 * They are written out byte for byte on purpose: test/nar/wire.test.ts
 * rebuilds each one from its words with an independent `str()`. Never compute
 * them here from a helper the test would share.
 */

function bytes(latin1: string): Buffer {
  return Buffer.from(latin1, 'latin1');
}

/** str("nix-archive-1") str("(") str("type"): the start of every NAR. */
export const TOK_NAR = bytes(
  '\x0d\0\0\0\0\0\0\0nix-archive-1\0\0\0' + '\x01\0\0\0\0\0\0\0(\0\0\0\0\0\0\0' + '\x04\0\0\0\0\0\0\0type\0\0\0\0',
);
/** The magic alone: str("nix-archive-1"). */
export const TOK_MAGIC = TOK_NAR.subarray(0, 24);
/** str("regular") str("contents"): a non-executable file, up to its length. */
export const TOK_REG = bytes('\x07\0\0\0\0\0\0\0regular\0' + '\x08\0\0\0\0\0\0\0contents');
/** str("regular") str("executable") str("") str("contents"). */
export const TOK_EXE = bytes(
  '\x07\0\0\0\0\0\0\0regular\0' +
    '\x0a\0\0\0\0\0\0\0executable\0\0\0\0\0\0' +
    '\0\0\0\0\0\0\0\0' +
    '\x08\0\0\0\0\0\0\0contents',
);
/** str("symlink") str("target"), up to the target's length. */
export const TOK_SYM = bytes('\x07\0\0\0\0\0\0\0symlink\0' + '\x06\0\0\0\0\0\0\0target\0\0');
/** str("directory"). */
export const TOK_DIR = bytes('\x09\0\0\0\0\0\0\0directory\0\0\0\0\0\0\0');
/** str("entry") str("(") str("name"), up to the name's length. */
export const TOK_ENT = bytes(
  '\x05\0\0\0\0\0\0\0entry\0\0\0' + '\x01\0\0\0\0\0\0\0(\0\0\0\0\0\0\0' + '\x04\0\0\0\0\0\0\0name\0\0\0\0',
);
/** str("node") str("(") str("type"): after an entry's name. */
export const TOK_NOD = bytes(
  '\x04\0\0\0\0\0\0\0node\0\0\0\0' + '\x01\0\0\0\0\0\0\0(\0\0\0\0\0\0\0' + '\x04\0\0\0\0\0\0\0type\0\0\0\0',
);
/** str(")"): closes a node or an entry. */
export const TOK_PAR = bytes('\x01\0\0\0\0\0\0\0)\0\0\0\0\0\0\0');

/** The words a reader meets, each on its own (the decoder matches them one by one). */
export const WORDS = {
  magic: 'nix-archive-1',
  open: '(',
  close: ')',
  type: 'type',
  regular: 'regular',
  executable: 'executable',
  contents: 'contents',
  symlink: 'symlink',
  target: 'target',
  directory: 'directory',
  entry: 'entry',
  name: 'name',
  node: 'node',
} as const;

/** Longest entry name a reader accepts (NAME_MAX on Linux; Nix 2.35 caps it too). */
export const MAX_NAME_LENGTH = 255;
/** Longest symlink target a reader accepts (PATH_MAX - 1; as Nix 2.35). */
export const MAX_TARGET_LENGTH = 4095;
/**
 * A node's depth is the number of directories above it (the root is 0). A
 * reader rejects depth >= MAX_DEPTH, as Nix 2.35 does, so a hostile NAR
 * cannot drive a restore or listing arbitrarily deep.
 */
export const MAX_DEPTH = 64;
/**
 * Largest file a reader accepts: lengths are u64 on the wire, but narpush
 * keeps sizes as JS numbers, exact up to 2^53 - 1 bytes (8 PiB).
 */
export const MAX_CONTENTS_LENGTH = Number.MAX_SAFE_INTEGER;
/** Longest keyword of the grammar ("nix-archive-1"); a reader refuses longer words before reading them. */
export const MAX_WORD_LENGTH = 13;

/** Zero bytes needed after `n` bytes to reach a multiple of 8. */
export function padLength(n: number): number {
  return (8 - (n % 8)) % 8;
}

/** Write `n` (0 <= n <= 2^53 - 1) as a u64 little-endian at `offset`; returns the offset after it. */
export function writeU64(buf: Buffer, n: number, offset: number): number {
  buf.writeUInt32LE(n % 0x1_0000_0000, offset);
  buf.writeUInt32LE(Math.floor(n / 0x1_0000_0000), offset + 4);
  return offset + 8;
}

/** Read a u64 little-endian at `offset`; values above 2^53 - 1 come back as Infinity. */
export function readU64(buf: Buffer, offset: number): number {
  const lo = buf.readUInt32LE(offset);
  const hi = buf.readUInt32LE(offset + 4);
  if (hi >= 0x20_0000) return Infinity;
  return hi * 0x1_0000_0000 + lo;
}

/** Why `name` may not be a directory entry name, or undefined when it may. */
export function entryNameError(name: Uint8Array): string | undefined {
  if (name.length === 0) return 'is empty';
  if (name.length > MAX_NAME_LENGTH) return `is longer than ${MAX_NAME_LENGTH} bytes`;
  if (name.length === 1 && name[0] === 0x2e) return "is '.'";
  if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) return "is '..'";
  if (name.includes(0x2f)) return "contains '/'";
  if (name.includes(0)) return 'contains a NUL byte';
  return undefined;
}

/** Why `target` may not be a symlink target, or undefined when it may. */
export function symlinkTargetError(target: Uint8Array): string | undefined {
  if (target.length === 0) return 'is empty';
  if (target.length > MAX_TARGET_LENGTH) return `is longer than ${MAX_TARGET_LENGTH} bytes`;
  if (target.includes(0)) return 'contains a NUL byte';
  return undefined;
}

/** A name or target for an error message: printable ASCII as is, anything else as \xNN, cut at 64 bytes. */
export function showBytes(b: Uint8Array): string {
  let s = '';
  const n = Math.min(b.length, 64);
  for (let i = 0; i < n; i++) {
    const c = b[i]!;
    s += c >= 0x20 && c < 0x7f && c !== 0x27 && c !== 0x5c ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
  }
  return `'${s}${b.length > n ? '...' : ''}'`;
}
