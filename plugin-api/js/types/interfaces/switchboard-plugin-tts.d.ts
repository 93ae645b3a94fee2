/// <reference path="./switchboard-plugin-types.d.ts" />
declare module 'switchboard:plugin/tts@0.2.0' {
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
   * What the host asks.
   */
  export type TtsInput = TtsInputText | TtsInputFlush | TtsInputCancel | TtsInputIo | TtsInputHangup;
  /**
   * Speak this text after what was given before.
   */
  export interface TtsInputText {
    tag: 'text',
    val: string,
  }
  /**
   * No more text for this utterance: speak what is buffered.
   */
  export interface TtsInputFlush {
    tag: 'flush',
  }
  /**
   * Drop everything not yet returned (the caller barged in).
   */
  export interface TtsInputCancel {
    tag: 'cancel',
  }
  /**
   * Host I/O the plugin asked for completed.
   */
  export interface TtsInputIo {
    tag: 'io',
    val: IoEvent,
  }
  /**
   * The call is over.
   */
  export interface TtsInputHangup {
    tag: 'hangup',
  }
  /**
   * The speech, as it is produced.
   */
  export type TtsOutput = TtsOutputAudio | TtsOutputUtteranceDone;
  /**
   * Audio of the utterance, in any format the host can convert (PCM16 at any rate, or
   * μ-law at 8 kHz).
   */
  export interface TtsOutputAudio {
    tag: 'audio',
    val: AudioFrame,
  }
  /**
   * Everything given before the last `flush` has been returned as audio.
   */
  export interface TtsOutputUtteranceDone {
    tag: 'utterance-done',
  }
  
  export class Synthesizer {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    static open(config: SessionConfig): Synthesizer;
    handle(input: TtsInput): Array<TtsOutput>;
  }
}
