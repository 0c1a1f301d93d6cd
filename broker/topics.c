/* topics.c: being written */
