/// <reference path="./switchboard-plugin-types.d.ts" />
declare module 'switchboard:plugin/stt@0.2.0' {
  /**
   * Describes the plugin; called once when the host loads it.
   */
  export function describe(): PluginInfo;
  export type AudioFrame = import('switchboard:plugin/types@0.2.0').AudioFrame;
  export type SessionConfig = import('switchboard:plugin/types@0.2.0').SessionConfig;
  export type PluginError = import('switchboard:plugin/types@0.2.0').PluginError;
  export type IoEvent = import('switchboard:plugin/types@0.2.0').IoEvent;
  export type PluginInfo = import('switchboard:plugin/types@0.2.0').PluginInfo;
  /**
   * One thing that happened on the call, for the recognizer.
   */
  export type SttInput = SttInputAudio | SttInputEndOfTurn | SttInputIo | SttInputHangup;
  /**
   * 20 ms of caller audio, in the format `describe` asked for.
   */
  export interface SttInputAudio {
    tag: 'audio',
    val: AudioFrame,
  }
  /**
   * The host's endpointing decided the caller's turn is over: finalise what you have and
   * answer with the turn's final `transcript` (empty when nothing was said), then
   * `end-of-turn` — at once, or when upstream I/O completes.
   */
  export interface SttInputEndOfTurn {
    tag: 'end-of-turn',
  }
  /**
   * Host I/O the plugin asked for completed.
   */
  export interface SttInputIo {
    tag: 'io',
    val: IoEvent,
  }
  /**
   * The call is over.
   */
  export interface SttInputHangup {
    tag: 'hangup',
  }
  /**
   * Text of the caller's current turn.
   */
  export interface SttTranscript {
    text: string,
    /**
     * False for interim text that may still change.
     */
    isFinal: boolean,
  }
  /**
   * What the recognizer heard.
   */
  export type SttOutput = SttOutputSpeechStarted | SttOutputTranscript | SttOutputEndOfTurn;
  /**
   * Speech began (optional: the host's VAD also detects it).
   */
  export interface SttOutputSpeechStarted {
    tag: 'speech-started',
  }
  /**
   * Text of the current turn, interim or final.
   */
  export interface SttOutputTranscript {
    tag: 'transcript',
    val: SttTranscript,
  }
  /**
   * The recognizer's own endpointing: the turn is over (after its final transcript).
   */
  export interface SttOutputEndOfTurn {
    tag: 'end-of-turn',
  }
  
  export class Recognizer {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    static open(config: SessionConfig): Recognizer;
    handle(input: SttInput): Array<SttOutput>;
  }
}
