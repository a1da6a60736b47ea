import pkg from "../../package.json" with { type: "json" };

// compile.ts replaces this identifier with the git revision (bun build --define).
declare const STARGZ_REVISION: string | undefined;

/** The product version from package.json. */
export const VERSION: string = pkg.version;

/** The git revision baked in at build time, or `dev` when run from source. */
export const REVISION: string = typeof STARGZ_REVISION === "string" ? STARGZ_REVISION : "dev";
