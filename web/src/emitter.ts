/** A small typed event emitter: `on`, `once`, `off`, `emit`. A throwing handler never stops the others. */

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type EventMap<E> = { [K in keyof E]: (...args: any[]) => void };

export class Emitter<E extends EventMap<E>> {
  private readonly handlers = new Map<keyof E, Set<E[keyof E]>>();

  /** Add a handler; returns a function that removes it. */
  on<K extends keyof E>(event: K, handler: E[K]): () => void {
    let set = this.handlers.get(event);
    if (!set) {
      set = new Set();
      this.handlers.set(event, set);
    }
    set.add(handler);
    return () => this.off(event, handler);
  }

  once<K extends keyof E>(event: K, handler: E[K]): () => void {
    const wrapped = ((...args: Parameters<E[K]>) => {
      this.off(event, wrapped);
      handler(...args);
    }) as E[K];
    return this.on(event, wrapped);
  }

  off<K extends keyof E>(event: K, handler: E[K]): void {
    this.handlers.get(event)?.delete(handler);
  }

  protected emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void {
    for (const handler of [...(this.handlers.get(event) ?? [])]) {
      try {
        handler(...args);
      } catch (err) {
        console.error(`llmrtc: a '${String(event)}' handler threw`, err);
      }
    }
  }

  /** Remove every handler of every event. */
  removeAllListeners(): void {
    this.handlers.clear();
  }
}
