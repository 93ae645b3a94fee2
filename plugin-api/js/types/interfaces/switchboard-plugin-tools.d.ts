declare module 'switchboard:plugin/tools@0.2.0' {
  /**
   * A tool the agent may call.
   */
  export interface Tool {
    /**
     * Unique within the call, `[A-Za-z0-9_-]{1,64}` (the limit OpenAI's APIs set).
     */
    name: string,
    /**
     * What it does, for the model.
     */
    description: string,
    /**
     * JSON Schema of its arguments, as JSON text (an object schema).
     */
    parameters: string,
  }
  /**
   * The model asked to call a tool.
   */
  export interface ToolCall {
    /**
     * The model's id for this call (OpenAI's `call_id`), echoed in its result.
     */
    id: string,
    /**
     * The tool's name.
     */
    name: string,
    /**
     * The arguments, as JSON text (an object, as the model wrote it).
     */
    arguments: string,
  }
  /**
   * What a tool call came to.
   */
  export type ToolOutcome = ToolOutcomeOutput | ToolOutcomeError;
  /**
   * The tool's output, as JSON text.
   */
  export interface ToolOutcomeOutput {
    tag: 'output',
    val: string,
  }
  /**
   * Why it failed (bad arguments, timeout, an error from its backend, not granted), in
   * words for the model.
   */
  export interface ToolOutcomeError {
    tag: 'error',
    val: string,
  }
  /**
   * The result of a `tool-call`.
   */
  export interface ToolResult {
    /**
     * The call's `id`.
     */
    id: string,
    outcome: ToolOutcome,
  }
}
