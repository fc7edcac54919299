/**
 * The one event type shared by the filesystem walker (walk.ts), the encoder
 * (encode.ts) and the decoder (decode.ts), as in harmonia: a NAR is a
 * depth-first sequence of these, so each part can be tested alone against
 * in-memory trees.
 *
 * Order: one root node; a `directory` is followed by its entries, in
 * unsigned byte order of their names, then by `end-directory`. `name` is
 * absent for the root and present for every entry. Names and symlink targets
 * are Buffers end to end: they need not be UTF-8 and must never pass through
 * JS strings.
 */

export interface RegularEvent {
  readonly type: 'regular';
  readonly name?: Buffer;
  readonly executable: boolean;
  /** Bytes of contents; `contents` must yield exactly this many (sizes are exact up to 2^53 - 1). */
  readonly size: number;
  /**
   * The file's bytes, in order. May be read at most once, and only before the
   * next event is requested (a decoder's contents come from the same stream).
   */
  readonly contents: AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

export interface SymlinkEvent {
  readonly type: 'symlink';
  readonly name?: Buffer;
  readonly target: Buffer;
}

export interface DirectoryEvent {
  readonly type: 'directory';
  readonly name?: Buffer;
}

export interface EndDirectoryEvent {
  readonly type: 'end-directory';
}

export type NarEvent = RegularEvent | SymlinkEvent | DirectoryEvent | EndDirectoryEvent;

/** Either kind of iterable of events: the walker is synchronous, the decoder asynchronous. */
export type NarEvents = Iterable<NarEvent> | AsyncIterable<NarEvent>;
