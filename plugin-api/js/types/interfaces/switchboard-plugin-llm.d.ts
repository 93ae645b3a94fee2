/// <reference path="./switchboard-plugin-tools.d.ts" />
/// <reference path="./switchboard-plugin-types.d.ts" />
declare module 'switchboard:plugin/llm@0.2.0' {
  /**
   * Describes the plugin; called once when the host loads it.
   */
  export function describe(): PluginInfo;
  export type SessionConfig = import('switchboard:plugin/types@0.2.0').SessionConfig;
  export type PluginError = import('switchboard:plugin/types@0.2.0').PluginError;
  export type IoEvent = import('switchboard:plugin/types@0.2.0').IoEvent;
  export type PluginInfo = import('switchboard:plugin/types@0.2.0').PluginInfo;
  export type Tool = import('switchboard:plugin/tools@0.2.0').Tool;
  export type ToolCall = import('switchboard:plugin/tools@0.2.0').ToolCall;
  /**
   * Who said a message.
   * # Variants
   * 
   * ## `"system"`
   * 
   * ## `"user"`
   * 
   * ## `"assistant"`
   * 
   * ## `"tool"`
   * 
   * A tool's result (`tool-call-id` says which call).
   */
  export type Role = 'system' | 'user' | 'assistant' | 'tool';
  /**
   * One message of the history.
   */
  export interface Message {
    role: Role,
    /**
     * The text (for a `tool` message, the result: output JSON, or the error).
     */
    content: string,
    /**
     * An `assistant` message's tool calls (the reply asked for them).
     */
    toolCalls: Array<ToolCall>,
    /**
     * A `tool` message's call.
     */
    toolCallId?: string,
  }
  /**
   * What the host asks.
   */
  export type LlmInput = LlmInputReply | LlmInputCancel | LlmInputIo | LlmInputHangup | LlmInputTools;
  /**
   * Reply to this history (oldest first; the agent's instructions first, as `system`).
   * A reply still in progress is abandoned.
   */
  export interface LlmInputReply {
    tag: 'reply',
    val: Array<Message>,
  }
  /**
   * Stop the reply in progress (the caller barged in); no more deltas for it.
   */
  export interface LlmInputCancel {
    tag: 'cancel',
  }
  /**
   * Host I/O the plugin asked for completed.
   */
  export interface LlmInputIo {
    tag: 'io',
    val: IoEvent,
  }
  /**
   * The call is over.
   */
  export interface LlmInputHangup {
    tag: 'hangup',
  }
  /**
   * The agent's tools, for every `reply` from now on: sent right after `open` when the
   * agent has any, and again whenever they change. Each list replaces the one before.
   */
  export interface LlmInputTools {
    tag: 'tools',
    val: Array<Tool>,
  }
  /**
   * The reply, as it is produced.
   */
  export type LlmOutput = LlmOutputTextDelta | LlmOutputDone | LlmOutputToolCall;
  /**
   * More text of the reply.
   */
  export interface LlmOutputTextDelta {
    tag: 'text-delta',
    val: string,
  }
  /**
   * The reply is complete. When it asked for tool calls, the host runs them and asks
   * for the continuation: a `reply` whose history ends with the assistant message
   * (carrying the calls) and one `tool` message per result.
   */
  export interface LlmOutputDone {
    tag: 'done',
  }
  /**
   * The reply calls a tool (whole: a plugin assembles streamed arguments itself).
   */
  export interface LlmOutputToolCall {
    tag: 'tool-call',
    val: ToolCall,
  }
  
  export class Conversation {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    static open(config: SessionConfig): Conversation;
    handle(input: LlmInput): Array<LlmOutput>;
  }
}
