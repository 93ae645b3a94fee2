/// <reference path="./interfaces/switchboard-plugin-host.d.ts" />
/// <reference path="./interfaces/switchboard-plugin-stt.d.ts" />
/// <reference path="./interfaces/switchboard-plugin-types.d.ts" />
declare module 'switchboard:plugin/stt-plugin@0.2.0' {
  export type * as SwitchboardPluginHost020 from 'switchboard:plugin/host@0.2.0'; // import switchboard:plugin/host@0.2.0
  export type * as SwitchboardPluginTypes020 from 'switchboard:plugin/types@0.2.0'; // import switchboard:plugin/types@0.2.0
  export * as stt from 'switchboard:plugin/stt@0.2.0'; // export switchboard:plugin/stt@0.2.0
}
