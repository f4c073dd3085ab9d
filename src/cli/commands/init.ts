import { type Command, Option } from 'commander'
import { initProject } from '../init/init-project.js'

interface InitFlags {
  ts?: boolean
  js?: boolean
}

export function registerInit(program: Command): void {
  program
    .command('init')
    .description(
      'write a commented matview.config.ts (.mjs without TypeScript) and git-ignore .matview/',
    )
    .option('--ts', 'write matview.config.ts (default when tsconfig.json or typescript is there)')
    .addOption(new Option('--js', 'write matview.config.mjs (default otherwise)').conflicts('ts'))
    .addHelpText(
      'after',
      `
Writes the config in the working directory (no database is opened) and adds .matview/ (the
embedded database) to .gitignore, creating it if absent. An existing matview.config.* is never
overwritten.

Exit codes: 0 written, 2 a config file exists already, or usage error.`,
    )
    .action((flags: InitFlags) => {
      const language = flags.ts ? 'ts' : flags.js ? 'mjs' : undefined
      const result = initProject(process.cwd(), language ? { language } : {})
      const ignored = {
        created: 'created .gitignore with .matview/',
        added: 'added .matview/ to .gitignore',
        present: '.gitignore already ignores .matview/',
      }[result.gitignore]
      console.log(`wrote ${result.configFile}; ${ignored}
next: define a view in ${result.configFile} (an example is in the file), then
  npx matview update    create the views and fill them
  npx matview status    see each view's state, pending work and last run`)
    })
}
