/**
 * A small, strict XML reader on top of fast-xml-parser: one root element,
 * attributes kept as strings, text kept verbatim, element namespaces resolved
 * from the `xmlns` declarations in scope.
 *
 * What it refuses, and why:
 * - malformed XML (fast-xml-parser's validator, with its line and column);
 * - any DOCTYPE: libvirt never writes one, and a DOCTYPE is where entity
 *   definitions (and so entity-expansion bombs) live. Only the five
 *   predefined entities and numeric character references are decoded; an
 *   unknown entity reference is an error rather than literal text;
 * - nesting deeper than 256 elements, libxml2's own default limit (libvirt
 *   would refuse such a document too), so walking the tree cannot exhaust the
 *   stack. fast-xml-parser enforces it while parsing (`maxNestedTags`, whose
 *   own default is 100), and the tree walk checks again.
 * Comments and processing instructions are dropped; CDATA becomes text.
 */

import { XMLParser, XMLValidator } from 'fast-xml-parser';

import { InvalidArgs, q } from '../errors.js';

/** Deepest element nesting accepted (libxml2's default `xmlParserMaxDepth`). */
const XML_MAX_DEPTH = 256;

/** Namespace of the `xml:` prefix, bound by definition. */
const XML_NS = 'http://www.w3.org/XML/1998/namespace';

export interface XmlElement {
  /** The name as written, with its prefix: `vfio:vm`. */
  readonly name: string;
  /** The name without prefix: `vm`. */
  readonly localName: string;
  /** The namespace URI the prefix (or the default namespace) resolves to; `null` for none or an unbound prefix. */
  readonly namespace: string | null;
  /** Attributes as written (names with their prefixes), `xmlns` declarations included. */
  readonly attributes: ReadonlyMap<string, string>;
  readonly children: readonly XmlElement[];
  /** The element's own text (CDATA included), concatenated, not trimmed; children's text is not included. */
  readonly text: string;
}

/** fast-xml-parser's `preserveOrder` node: `{ tag: children, ':@': attributes }` or `{ '#text': text }`. */
type RawNode = Record<string, unknown>;

const PREDEFINED: Readonly<Record<string, string>> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** One of our own refusals, thrown from inside the parser's entity decoder. */
class RefusedXml extends Error {}

/**
 * The entity decoder fast-xml-parser calls for every text and attribute
 * value. It also hears about a DOCTYPE (through `addInputEntities`), which is
 * how we refuse one wherever it appears outside comments and CDATA.
 */
const strictEntities = {
  setExternalEntities(): void {},
  addInputEntities(): void {
    throw new RefusedXml('a DOCTYPE is not allowed (libvirt never writes one)');
  },
  reset(): void {},
  setXmlVersion(): void {},
  decode(text: string): string {
    if (!text.includes('&')) return text;
    return text.replace(/&([^;&\s]*);?/g, (match, ref: string) => {
      if (!match.endsWith(';')) throw new RefusedXml(`bare '&' in ${q(text)}; write '&amp;'`);
      const named = PREDEFINED[ref];
      if (named !== undefined) return named;
      const numeric = /^#(?:x([0-9a-fA-F]{1,6})|([0-9]{1,7}))$/.exec(ref);
      if (numeric) {
        const code = numeric[1] !== undefined ? Number.parseInt(numeric[1], 16) : Number(numeric[2]);
        const allowed =
          code === 0x9 ||
          code === 0xa ||
          code === 0xd ||
          (code >= 0x20 && code <= 0xd7ff) ||
          (code >= 0xe000 && code <= 0xfffd) ||
          (code >= 0x10000 && code <= 0x10ffff);
        if (allowed) return String.fromCodePoint(code);
        throw new RefusedXml(`character reference ${q(match)} is not an XML character`);
      }
      throw new RefusedXml(`unknown entity ${q(match)}`);
    });
  },
};

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  allowBooleanAttributes: false,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  processEntities: true,
  entityDecoder: strictEntities,
  maxNestedTags: XML_MAX_DEPTH,
});

/**
 * Parse a whole XML document into its root element.
 *
 * @param what names the document in messages: `'domain XML'`.
 * @throws InvalidArgs for anything malformed or refused, with line and column where known.
 */
export function parseXmlDocument(xml: string, what: string): XmlElement {
  const verdict = XMLValidator.validate(xml);
  if (verdict !== true) {
    const { line, col, msg } = verdict.err;
    const where = col === undefined ? `line ${line}` : `line ${line}, column ${col}`;
    throw new InvalidArgs(`Invalid ${what}: ${where}: ${msg}`);
  }
  let nodes: RawNode[];
  try {
    nodes = parser.parse(xml) as RawNode[];
  } catch (error) {
    // The validator let it through, so this is one of our refusals or a parser limit.
    const why = error instanceof Error ? error.message : String(error);
    throw new InvalidArgs(
      `Invalid ${what}: ${why === 'Maximum nested tags exceeded' ? `elements nested deeper than ${XML_MAX_DEPTH} levels` : why}`,
    );
  }
  const roots = nodes.filter((node) => elementName(node) !== null);
  if (roots.length !== 1) {
    throw new InvalidArgs(`Invalid ${what}: expected exactly one root element, found ${roots.length}`);
  }
  return toElement(roots[0]!, new Map([['xml', XML_NS]]), 1, what);
}

function elementName(node: RawNode): string | null {
  for (const key of Object.keys(node)) {
    if (key !== ':@' && key !== '#text') return key;
  }
  return null;
}

function toElement(node: RawNode, scope: ReadonlyMap<string, string>, depth: number, what: string): XmlElement {
  if (depth > XML_MAX_DEPTH) {
    throw new InvalidArgs(`Invalid ${what}: elements nested deeper than ${XML_MAX_DEPTH} levels`);
  }
  const name = elementName(node)!;
  const attributes = new Map<string, string>(Object.entries((node[':@'] ?? {}) as Record<string, string>));

  let inner: Map<string, string> | null = null;
  for (const [attr, value] of attributes) {
    if (attr === 'xmlns' || attr.startsWith('xmlns:')) {
      inner ??= new Map(scope);
      // xmlns="" undeclares the default namespace.
      inner.set(attr === 'xmlns' ? '' : attr.slice(6), value);
    }
  }
  const ns = inner ?? scope;

  const colon = name.indexOf(':');
  const prefix = colon === -1 ? '' : name.slice(0, colon);
  const uri = ns.get(prefix);

  const children: XmlElement[] = [];
  let text = '';
  for (const child of (node[name] ?? []) as RawNode[]) {
    if (typeof child['#text'] === 'string') text += child['#text'];
    else if (elementName(child) !== null) children.push(toElement(child, ns, depth + 1, what));
  }
  return {
    name,
    localName: colon === -1 ? name : name.slice(colon + 1),
    namespace: uri === undefined || uri === '' ? null : uri,
    attributes,
    children,
    text,
  };
}
