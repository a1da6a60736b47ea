/**
 * Image references parsed and normalised the way containerd and docker do:
 * `python` → `docker.io/library/python:latest`, `host:port/repo@sha256:…`, `[::1]:5000/repo:tag`.
 */
import { type Digest, isDigest } from "./digest.ts";
import { InvalidReferenceError } from "./errors.ts";

/** A parsed, normalised image reference. */
export interface Reference {
  /** Registry host as written (normalised `docker.io`), with port; IPv6 in brackets. */
  readonly domain: string;
  /** Repository path inside the registry, e.g. `library/python`. */
  readonly repository: string;
  /** Tag, `latest` when the reference has neither tag nor digest. */
  readonly tag?: string;
  /** `algorithm:hex` digest when pinned. */
  readonly digest?: Digest;
}

/** The Docker Hub domain references normalise to. */
export const DOCKER_HUB = "docker.io";

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const HOST_LABEL = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const IPV6 = /^\[[0-9a-fA-F:.]+(?:%[\w.-]+)?\]$/;
const PORT = /^\d{1,5}$/;

function fail(ref: string, why: string): never {
  throw new InvalidReferenceError(`invalid reference "${ref}": ${why}`);
}

function validDomain(domain: string): boolean {
  let host = domain;
  let port: string | undefined;
  if (domain.startsWith("[")) {
    const end = domain.indexOf("]");
    if (end < 0) return false;
    host = domain.slice(0, end + 1);
    const rest = domain.slice(end + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return false;
      port = rest.slice(1);
    }
    if (!IPV6.test(host)) return false;
  } else {
    const colon = domain.lastIndexOf(":");
    if (colon >= 0) {
      host = domain.slice(0, colon);
      port = domain.slice(colon + 1);
    }
    if (!host.split(".").every((l) => HOST_LABEL.test(l))) return false;
  }
  return port === undefined || (PORT.test(port) && Number(port) <= 65535);
}

/** True when the first path component names a registry rather than a Docker Hub namespace. */
function looksLikeDomain(first: string): boolean {
  return first.includes(".") || first.includes(":") || first.startsWith("[") ||
    first === "localhost" || first.toLowerCase() !== first;
}

/**
 * Parses and normalises `ref`; throws {@link InvalidReferenceError} with the reason when it is
 * malformed (uppercase repository, bad tag or digest, empty components, too long).
 */
export function parseReference(ref: string): Reference {
  if (ref === "") fail(ref, "empty");
  if (/\s/.test(ref)) fail(ref, "contains whitespace");
  let rest = ref;
  let digest: Digest | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    const pinned = rest.slice(at + 1);
    rest = rest.slice(0, at);
    // Only the registered algorithms: the digest goes into a manifest URL as it is.
    if (!isDigest(pinned)) fail(ref, "invalid digest format");
    digest = pinned;
  }
  let tag: string | undefined;
  const slash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > slash && !rest.slice(colon).includes("]")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) fail(ref, "invalid tag format");
  }
  let domain = DOCKER_HUB;
  let repository = rest;
  const firstSlash = rest.indexOf("/");
  if (firstSlash >= 0 && looksLikeDomain(rest.slice(0, firstSlash))) {
    domain = rest.slice(0, firstSlash);
    repository = rest.slice(firstSlash + 1);
    if (!validDomain(domain)) fail(ref, `invalid registry host "${domain}"`);
  }
  if (repository === "") fail(ref, "missing repository");
  if (domain === "index.docker.io") domain = DOCKER_HUB;
  if (domain === DOCKER_HUB && !repository.includes("/")) repository = `library/${repository}`;
  if (repository.toLowerCase() !== repository) fail(ref, "repository name must be lowercase");
  if (!repository.split("/").every((c) => PATH_COMPONENT.test(c))) {
    fail(ref, "invalid repository name");
  }
  if (domain.length + 1 + repository.length > 255) fail(ref, "repository name too long");
  if (tag === undefined && digest === undefined) tag = "latest";
  return {
    domain,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest ? { digest } : {}),
  };
}

/** The canonical string form: `domain/repository[:tag][@digest]`. */
export function formatReference(ref: Reference): string {
  return `${ref.domain}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ""}${
    ref.digest ? `@${ref.digest}` : ""
  }`;
}

/** `domain/repository`, the name without tag or digest. */
export function referenceName(ref: Reference): string {
  return `${ref.domain}/${ref.repository}`;
}

/** The same repository at another tag or digest. */
export function withObject(ref: Reference, object: { tag?: string; digest?: Digest }): Reference {
  return {
    domain: ref.domain,
    repository: ref.repository,
    ...(object.tag !== undefined ? { tag: object.tag } : {}),
    ...(object.digest ? { digest: object.digest } : {}),
  };
}
