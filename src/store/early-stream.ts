/**
 * The Nix daemon's byte stream, opened before the command that needs it has
 * loaded. Without a running daemon narpush starts `nix-daemon --stdio`,
 * which takes tens of milliseconds to be ready: started as the command line
 * is read, that time passes while the command's own modules load instead of
 * after.
 *
 * Nothing is reported from here: a failure to open is kept and surfaces
 * when (and only if) the command takes the stream, in the command's own
 * order of checks (a bad flag is still reported first). A stream nobody
 * took is closed by `release`.
 */
import { type OpenedStream, type StoreTransport, openStream } from './transport.js';

export interface EarlyStream {
  /** The stream being opened, once; undefined after that (open another). */
  take(): Promise<OpenedStream> | undefined;
  /** Close the stream if nobody took it (and reap a spawned daemon). */
  release(): Promise<void>;
}

export function openStreamEarly(transport: StoreTransport): EarlyStream {
  const opening = openStream(transport);
  // Kept for take(); until then, a rejection is not unhandled.
  opening.catch(() => {});
  let taken = false;
  return {
    take() {
      if (taken) return undefined;
      taken = true;
      return opening;
    },
    async release() {
      if (taken) return;
      taken = true;
      const opened = await opening.catch(() => undefined);
      if (!opened) return;
      // Destroying a spawned daemon's stdio duplex emits an AbortError: expected here.
      opened.stream.on('error', () => {});
      opened.stream.destroy();
      await opened.dispose();
    },
  };
}
