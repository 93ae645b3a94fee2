/// <reference path="./switchboard-plugin-tools.d.ts" />
/// <reference path="./switchboard-plugin-types.d.ts" />
declare module 'switchboard:plugin/realtime@0.2.0' {
  /**
   * Describes the plugin; called once when the host loads it.
   */
  export function describe(): PluginInfo;
  export type AudioFrame = import('switchboard:plugin/types@0.2.0').AudioFrame;
  export type SessionConfig = import('switchboard:plugin/types@0.2.0').SessionConfig;
  export type PluginError = import('switchboard:plugin/types@0.2.0').PluginError;
  export type IoEvent = import('switchboard:plugin/types@0.2.0').IoEvent;
  export type PluginInfo = import('switchboard:plugin/types@0.2.0').PluginInfo;
  export type Tool = import('switchboard:plugin/tools@0.2.0').Tool;
  export type ToolCall = import('switchboard:plugin/tools@0.2.0').ToolCall;
  export type ToolResult = import('switchboard:plugin/tools@0.2.0').ToolResult;
  /**
   * Text of one side of the conversation.
   */
  export interface Transcript {
    text: string,
    /**
     * False for a partial (interim) result.
     */
    isFinal: boolean,
  }
  /**
   * One thing that happened on the call.
   */
  export type SessionInput = SessionInputAudio | SessionInputDtmf | SessionInputMarkPlayed | SessionInputInterrupted | SessionInputHangup | SessionInputIo | SessionInputTools | SessionInputToolResult;
  /**
   * 20 ms of caller audio, in the session's input format.
   */
  export interface SessionInputAudio {
    tag: 'audio',
    val: AudioFrame,
  }
  /**
   * A DTMF digit the caller pressed: `0`–`9`, `*`, `#`, `A`–`D`.
   */
  export interface SessionInputDtmf {
    tag: 'dtmf',
    val: string,
  }
  /**
   * Twilio reports that the audio before this mark (sent by the plugin) has played.
   */
  export interface SessionInputMarkPlayed {
    tag: 'mark-played',
    val: string,
  }
  /**
   * The plugin cleared playback while a reply was playing (barge-in); the caller had heard
   * this many milliseconds of that reply, by the host's playback clock.
   */
  export interface SessionInputInterrupted {
    tag: 'interrupted',
    val: bigint,
  }
  /**
   * The call is over; no more inputs follow. Outputs returned here are dropped.
   */
  export interface SessionInputHangup {
    tag: 'hangup',
  }
  /**
   * Something the plugin asked the host to do completed (host I/O).
   */
  export interface SessionInputIo {
    tag: 'io',
    val: IoEvent,
  }
  /**
   * The agent's tools: sent right after `open`, before any other input, when the agent
   * has any, and again whenever they change (an MCP server's tools arrive or go). Each
   * list replaces the one before.
   */
  export interface SessionInputTools {
    tag: 'tools',
    val: Array<Tool>,
  }
  /**
   * The result of a `tool-call` the plugin output.
   */
  export interface SessionInputToolResult {
    tag: 'tool-result',
    val: ToolResult,
  }
  /**
   * One thing the plugin wants done.
   */
  export type SessionOutput = SessionOutputPlay | SessionOutputClearPlayback | SessionOutputMark | SessionOutputUserTranscript | SessionOutputAgentTranscript | SessionOutputTransfer | SessionOutputHangUp | SessionOutputToolCall;
  /**
   * Queue audio for the caller, after any audio already queued.
   */
  export interface SessionOutputPlay {
    tag: 'play',
    val: AudioFrame,
  }
  /**
   * Drop all queued audio that has not played yet (Twilio `clear`).
   */
  export interface SessionOutputClearPlayback {
    tag: 'clear-playback',
  }
  /**
   * Ask to be told (`mark-played`) when the audio queued so far has played.
   */
  export interface SessionOutputMark {
    tag: 'mark',
    val: string,
  }
  /**
   * What the caller said.
   */
  export interface SessionOutputUserTranscript {
    tag: 'user-transcript',
    val: Transcript,
  }
  /**
   * What the agent said.
   */
  export interface SessionOutputAgentTranscript {
    tag: 'agent-transcript',
    val: Transcript,
  }
  /**
   * Transfer the call to this E.164 number.
   */
  export interface SessionOutputTransfer {
    tag: 'transfer',
    val: string,
  }
  /**
   * End the call once the queued audio has played.
   */
  export interface SessionOutputHangUp {
    tag: 'hang-up',
  }
  /**
   * Call a tool; its `tool-result` comes later as an input.
   */
  export interface SessionOutputToolCall {
    tag: 'tool-call',
    val: ToolCall,
  }
  
  export class Session {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    /**
    * Starts a session for one call.
    */
    static open(config: SessionConfig): Session;
    /**
    * Feeds one input; returns the outputs it caused, in order.
    */
    handle(input: SessionInput): Array<SessionOutput>;
  }
}
