/* syncer.c: being written */
