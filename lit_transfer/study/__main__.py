from lit_transfer.command_line import setup_check

if __name__ == "__main__":
    setup_check.exit_if_broken("lit_transfer.study")  # before the runner imports torchvision
    from lit_transfer.study.runner import main

    main()
