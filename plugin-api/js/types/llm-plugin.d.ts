/// <reference path="./interfaces/switchboard-plugin-host.d.ts" />
/// <reference path="./interfaces/switchboard-plugin-llm.d.ts" />
/// <reference path="./interfaces/switchboard-plugin-tools.d.ts" />
/// <reference path="./interfaces/switchboard-plugin-types.d.ts" />
declare module 'switchboard:plugin/llm-plugin@0.2.0' {
  export type * as SwitchboardPluginHost020 from 'switchboard:plugin/host@0.2.0'; // import switchboard:plugin/host@0.2.0
  export type * as SwitchboardPluginTools020 from 'switchboard:plugin/tools@0.2.0'; // import switchboard:plugin/tools@0.2.0
  export type * as SwitchboardPluginTypes020 from 'switchboard:plugin/types@0.2.0'; // import switchboard:plugin/types@0.2.0
  export * as llm from 'switchboard:plugin/llm@0.2.0'; // export switchboard:plugin/llm@0.2.0
}
