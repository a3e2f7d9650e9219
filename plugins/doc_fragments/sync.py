# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # The options of _module/args.py SYNC_ARG_SPEC: the modules that put models into a cache.
    DOCUMENTATION = r'''
options:
  sync:
    description:
      - With V(true), every file and directory of a model is flushed to disk (C(fsync)) before the rename or
        exchange that puts the model in place, and the directories that step changed before the record that
        calls the files verified takes its place. After a power failure the cache holds the old or the new
        model (or none, where the file system cannot exchange two directories and the power failed between the
        two renames that replace one; the next run installs it), never a file under its final name with other
        bytes while its record calls it verified.
      - V(false) skips those flushes (records are still written to a temporary file, flushed and renamed), for
        golden-image builds whose image is flushed as a whole before anything uses it. After a power failure
        during such a run, files may hold other bytes than their records say; only O(sync=true) prevents that.
    type: bool
    default: true
'''
