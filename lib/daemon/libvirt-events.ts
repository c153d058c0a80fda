/**
 * What libvirt itself says about domains, through libvirt-dbus
 * (`org.libvirt`, signal `org.libvirt.Connect.DomainEvent(o, i, i)` on
 * `/org/libvirt/QEMU`): the daemon's second source, for what the hook alone
 * cannot tell.
 *
 * - A managed VM that starts without its `prepare` hook having reached us
 *   (the hook is missing or not executable, or libvirtd was not restarted
 *   after install: the most common field complaint) is reported loudly.
 * - libvirt-dbus sends nothing until a client calls it (after its own start,
 *   and after a libvirtd restart), so we call it once whenever its name gets
 *   an owner, and again after each `reconnect` hook.
 *
 * Never while a hook call is in flight: libvirt blocks calls about domains
 * until the hook returns, and the hook waits for us. Every call here first
 * waits for the lifecycle to be idle.
 */
import dbus from 'dbus-next';

const LIBVIRT_BUS_NAME = 'org.libvirt';
const LIBVIRT_QEMU_PATH = '/org/libvirt/QEMU';

/** virDomainEventType values we act on (libvirt's enum). */
export const DomainEventType = { STARTED: 2, STOPPED: 5 } as const;

interface LibvirtEventsOptions {
  readonly bus: dbus.MessageBus;
  /** Resolves when no hook is running or queued. */
  readonly idle: () => Promise<void>;
  /** A domain event, with the domain's name once it could be asked. */
  readonly onDomainEvent: (name: string, event: number, detail: number) => void;
  /** libvirt-dbus came (true) or went (false). */
  readonly onAvailable?: (available: boolean) => void;
  readonly onError?: (error: Error) => void;
}

type Props = { Get(iface: string, name: string): Promise<{ value: unknown }> };

export class LibvirtEvents {
  readonly #options: LibvirtEventsOptions;
  #object: dbus.ProxyObject | null = null;
  #closed = false;

  constructor(options: LibvirtEventsOptions) {
    this.#options = options;
  }

  /** Follow `org.libvirt`'s owner; attach now if it is already there. */
  async start(): Promise<void> {
    const driver = (await this.#options.bus.getProxyObject('org.freedesktop.DBus', '/org/freedesktop/DBus')).getInterface(
      'org.freedesktop.DBus',
    );
    driver.on('NameOwnerChanged', (name: string, _old: string, owner: string) => {
      if (name !== LIBVIRT_BUS_NAME || this.#closed) return;
      if (owner === '') {
        this.#detach();
        this.#options.onAvailable?.(false);
      } else {
        void this.#attach();
      }
    });
    const has = (await (driver['NameHasOwner'] as (n: string) => Promise<boolean>)(LIBVIRT_BUS_NAME)) === true;
    if (has) await this.#attach();
  }

  /** Call libvirt-dbus once so that it reconnects to libvirtd and sends events again. */
  async poke(): Promise<void> {
    await this.#options.idle();
    const object = this.#object;
    if (!object || this.#closed) return;
    try {
      await (object.getInterface('org.freedesktop.DBus.Properties') as unknown as Props).Get('org.libvirt.Connect', 'Version');
    } catch (error) {
      this.#options.onError?.(error as Error);
    }
  }

  /** Names of the running domains (ListDomains with VIR_CONNECT_LIST_DOMAINS_ACTIVE), asked when no hook runs. */
  async runningDomains(): Promise<string[]> {
    await this.#options.idle();
    const object = this.#object;
    if (!object || this.#closed) return [];
    const list = object.getInterface('org.libvirt.Connect')['ListDomains'] as (flags: number) => Promise<string[]>;
    const names: string[] = [];
    for (const path of await list(1)) {
      const name = await this.#nameOf(path);
      if (name !== null) names.push(name);
    }
    return names;
  }

  /**
   * Every domain libvirt has, with whether it runs (ListDomains(0), then
   * each domain's `Active`), asked when no hook runs. Null without libvirt-dbus.
   */
  async allDomains(): Promise<Map<string, boolean> | null> {
    await this.#options.idle();
    const object = this.#object;
    if (!object || this.#closed) return null;
    const list = object.getInterface('org.libvirt.Connect')['ListDomains'] as (flags: number) => Promise<string[]>;
    const domains = new Map<string, boolean>();
    for (const path of await list(0)) {
      const proxy = await this.#options.bus.getProxyObject(LIBVIRT_BUS_NAME, path);
      const props = proxy.getInterface('org.freedesktop.DBus.Properties') as unknown as Props;
      const name = (await props.Get('org.libvirt.Domain', 'Name')).value;
      const active = (await props.Get('org.libvirt.Domain', 'Active')).value;
      if (typeof name === 'string') domains.set(name, active === true);
    }
    return domains;
  }

  close(): void {
    this.#closed = true;
    this.#detach();
  }

  async #attach(): Promise<void> {
    try {
      this.#detach();
      const object = await this.#options.bus.getProxyObject(LIBVIRT_BUS_NAME, LIBVIRT_QEMU_PATH);
      object
        .getInterface('org.libvirt.Connect')
        .on('DomainEvent', (domain: string, event: number, detail: number) => void this.#onEvent(domain, event, detail));
      this.#object = object;
      this.#options.onAvailable?.(true);
      await this.poke();
    } catch (error) {
      this.#options.onError?.(error as Error);
    }
  }

  #detach(): void {
    this.#object?.getInterface('org.libvirt.Connect').removeAllListeners('DomainEvent');
    this.#object = null;
  }

  async #nameOf(domainPath: string): Promise<string | null> {
    const object = await this.#options.bus.getProxyObject(LIBVIRT_BUS_NAME, domainPath);
    const name = (await (object.getInterface('org.freedesktop.DBus.Properties') as unknown as Props).Get('org.libvirt.Domain', 'Name'))
      .value;
    return typeof name === 'string' ? name : null;
  }

  async #onEvent(domainPath: string, event: number, detail: number): Promise<void> {
    try {
      await this.#options.idle();
      const name = await this.#nameOf(domainPath);
      if (name !== null) this.#options.onDomainEvent(name, event, detail);
    } catch (error) {
      // The domain may be gone already (a transient VM that stopped).
      this.#options.onError?.(error as Error);
    }
  }
}
