import { defineConfig } from 'matview'
import { TagCounts } from './tag-counts.js'

export default defineConfig({
  database: 'pglite:.matview/pglite',
  batchSize: 100,
  views: [TagCounts],
})
