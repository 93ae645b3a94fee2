/// <reference path="./switchboard-plugin-types.d.ts" />
declare module 'switchboard:plugin/host@0.2.0' {
  /**
   * Writes a line to the host's log, inside the call's span (call sid, agent, plugin).
   */
  export function log(level: LogLevel, message: string): void;
  /**
   * Milliseconds since the Unix epoch, from the host's clock.
   */
  export function nowMs(): bigint;
  /**
   * A secret the agent grants this plugin in agents.toml (`realtime.secrets`), by name.
   */
  export function secret(name: string): string | undefined;
  /**
   * Opens a WebSocket (`wss://…` or `ws://…`); `ws-opened` or `failed` follows.
   */
  export function wsConnect(url: string, headers: Array<Header>): IoHandle;
  /**
   * Queues a message on an open (or opening) WebSocket.
   */
  export function wsSend(socket: IoHandle, message: Payload): void;
  /**
   * Closes a WebSocket; `ws-closed` follows.
   */
  export function wsClose(socket: IoHandle): void;
  /**
   * Sends an HTTP request; `http-head`, `http-chunk`s and `http-done` (or `failed`) follow.
   */
  export function httpSend(request: HttpRequest): IoHandle;
  /**
   * Starts a one-shot timer; `timer` follows after `delay-ms` milliseconds.
   */
  export function setTimer(delayMs: number): IoHandle;
  /**
   * Cancels a timer (or an HTTP request) that has not completed; no event follows.
   */
  export function cancel(target: IoHandle): void;
  export type LogLevel = import('switchboard:plugin/types@0.2.0').LogLevel;
  export type IoHandle = import('switchboard:plugin/types@0.2.0').IoHandle;
  export type Header = import('switchboard:plugin/types@0.2.0').Header;
  export type Payload = import('switchboard:plugin/types@0.2.0').Payload;
  export type HttpRequest = import('switchboard:plugin/types@0.2.0').HttpRequest;
  export type IoError = import('switchboard:plugin/types@0.2.0').IoError;
}
