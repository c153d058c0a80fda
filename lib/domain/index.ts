/**
 * lib/domain: the libvirt domain XML the qemu hook forwards, reduced to what
 * vfio-hookd acts on (libvirt's naming rules are in lib/names).
 */

export { DOMAIN_XML_MAX_BYTES, hasPassthroughDevices, parseDomainXml } from './domain-xml.js';
export type { DomainHostdev, DomainInfo } from './domain-xml.js';

export { INLINE_PARSE_MAX_BYTES, parseDomainXmlOffThread } from './parse-off-thread.js';

export { hookXmlDir, readHookXmlFile } from './hook-xml-file.js';

export { VFIO_XMLNS, parseVmMetadata } from './metadata.js';
export type { VmSettingsInput } from './metadata.js';

export { libvirtUnitScale, parseLibvirtScaledSize } from './scaled-size.js';

export { parseXmlDocument } from './xml-tree.js';
export type { XmlElement } from './xml-tree.js';
