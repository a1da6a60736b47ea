/**
 * The Linux FUSE kernel protocol in TypeScript, without libfuse: mount a read-only
 * {@link FileSystem} with {@link mount} and serve it until {@link FuseSession.unmount}.
 */
export { adopt, FuseSession, mount, type SessionState } from "./session.ts";
export { Errno, type ErrnoName, errnoName, errnoOf, FuseError } from "./errno.ts";
export {
  type Attr,
  type DirectorySink,
  type Entry,
  type FileSystem,
  type MaybePromise,
  type MountOptions,
  type NodeId,
  type OpenResult,
  type RequestContext,
  ROOT_ID,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  type StatFs,
} from "./types.ts";
export { MemoryFileSystem, type NodeOptions, type RepeatedContent } from "./memory.ts";
